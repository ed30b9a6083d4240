"""OpenMP's wait policy for the processes that train (set where runs start, never on import).

OpenMP threads that wait for work by spinning (its default) take the cores from every other
process: measured with benchmarks/threads.py on 2 cores, a run with 2 threads beside another
process fell from 30 to under 1 step/s. Passive waiting keeps that loss small. The runtime
(libgomp) reads the variable when torch loads it, so the call counts for processes started
after it (a sweep's workers, inheriting the environment) and for this one only if torch is not
loaded yet; a value the user set is kept.
"""

from __future__ import annotations

import os

WAIT_POLICY = "PASSIVE"


def prefer_passive_openmp() -> str:
    """Set OMP_WAIT_POLICY=PASSIVE unless the user chose a policy; returns the policy in force."""
    return os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
