"""Recursive Feature Machines (kernel ridge regression + AGOP feature learning) that grok
modular arithmetic (Mallinar et al. 2024), and the neural feature ansatz measure (NFA)."""

from icl_lab.rfm.kernels import agop, kernel_matrix, matrix_power_psd, predictor_gradients
from icl_lab.rfm.machine import CAPABILITIES, FEATURE_MATRIX, RUN_KIND, X_AXIS, RFMConfig, RFMResult, run_rfm
from icl_lab.rfm.measures import alignment, circulant_deviation, operand_block

__all__ = [
    "CAPABILITIES",
    "FEATURE_MATRIX",
    "RUN_KIND",
    "X_AXIS",
    "RFMConfig",
    "RFMResult",
    "agop",
    "alignment",
    "circulant_deviation",
    "kernel_matrix",
    "matrix_power_psd",
    "operand_block",
    "predictor_gradients",
    "run_rfm",
]
