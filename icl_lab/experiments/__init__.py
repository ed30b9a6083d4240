"""Paper reproductions as one-command experiments (`icl-lab experiment NAME`)."""

EXPERIMENTS = {
    "singh-clamps": "Singh et al. (ICML 2024) on their own task (pairs/cpu by default): no clamp, "
    "one layer-2 head kept, previous-token clamp, perfect previous-token input, matching (ideal "
    "induction pattern), perfect copying, 10/15 labels, 200 classes (all with one layer-2 head "
    "kept, as theirs; labels_15_all_heads: all eight); transition in steps and "
    "sequences per condition, mean ± sd over seeds, ratio to the baseline, plateau "
    "(--preset bursty/small: the earlier conditions on the bursty task).",
    "reddy-phases": "Reddy (ICLR 2024) figure 2 on the reference model (bursty/small): final ICL and "
    "IWL accuracy over K = 256..8192 classes x burstiness B = 1, 2, 4 (N = 8), mean ± sd over "
    "seeds, ICL transition per cell; the grid trains as batched groups (--group-size 1: one run "
    "at a time) and reports its wall time.",
    "anti-grokking": "Prakash & Martin (2025) at CPU length: digits/cpu (MLP, 1,000 training "
    "images, MSE, 8x init) with and without weight decay; phases (memorisation, grokking, "
    "anti-grokking) and the hidden layers' HTSR alpha at each.",
    "nanda-phases": "Nanda et al. (ICLR 2023) at their size on a CPU: modular/nanda (a + b mod 113, 30% of pairs, "
    "full batch, 1 layer, d_model 128) to 15k steps; the phase boundaries (memorised, restricted-loss fall, "
    "generalised, clean-up's end) and key frequencies read from the progress measures, beside the paper's (~40 min a seed on 2 cores).",
    "transience": "Singh et al. (NeurIPS 2023, ICML 2025): ICL that rises and then fades on bursty/transience "
    "(K = 256, B = 4, long), read with the strategy probes (ICL, flip, CIWL, IWL accuracy) under no change, "
    "L2 weight decay, persistent-ICL data (exact-copy queries) and the induction head held from the end of the first ICL rise on: "
    "peak, fall and which strategy ends on top, mean ± sd over seeds.",
    "llc-stages": "Hoogland et al. (TMLR 2025) stages from the local learning coefficient beside the ICL "
    "transition, on the reference preset (bursty/small; --preset pairs/cpu: Singh et al.'s task) with no clamp, "
    "the ideal induction pattern and the ideal previous-token pattern held: LLC (clamps on and off while sampling) "
    "and each head's refined LLC on every checkpoint, stage boundaries, table and figure (needs icl-lab[llc]).",
}
