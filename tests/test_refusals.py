"""Bad input that used to be accepted (or failed with a traceback), each refused in one line
before any work starts (issue 27, "Unclear or missing words")."""

import pytest

from icl_lab.config import MAX_STEPS, ConfigError


@pytest.mark.parametrize("steps", [1e20, MAX_STEPS + 1, "1e12"])
def test_an_absurd_step_count_is_refused_at_parse_time(tiny_run_config, steps):
    with pytest.raises(ConfigError, match=r"train\.steps=.* is more than 100,000,000"):
        tiny_run_config.with_overrides({"train.steps": steps})


def test_the_largest_allowed_step_count_is_accepted(tiny_run_config):
    assert tiny_run_config.with_overrides({"train.steps": MAX_STEPS}).train.steps == MAX_STEPS


def test_measure_on_a_file_says_it_is_a_file(tmp_path):
    import subprocess
    import sys

    file = tmp_path / "notes.txt"
    file.write_text("not a run")
    done = subprocess.run([sys.executable, "-m", "icl_lab.cli", "measure", str(file), "--measures", "icl_accuracy"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "a file, not a directory" in done.stderr and "notes.txt" in done.stderr
    assert file.read_text() == "not a run"
