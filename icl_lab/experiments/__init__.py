"""Paper reproductions as one-command experiments (`icl-lab experiment NAME`)."""

EXPERIMENTS = {
    "singh-clamps": "Singh et al. (ICML 2024) clamps on the reference bursty preset: no clamp, "
    "ideal previous-token head, ideal induction pattern, learned head from an unclamped run; "
    "ICL transition step per condition over seeds.",
}
