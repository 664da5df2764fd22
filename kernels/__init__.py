"""GPU kernels and their plain-PyTorch references, one folder per op.

    kernels/ssd/             Mamba2's state-space dual (scalar decay per head); also HADES's scan
    kernels/selective_scan/  Mamba's S6 selective scan (diagonal decay per channel and state)
    kernels/conv/            the short causal depthwise conv + SiLU of the mixers
    kernels/norm/            RMSNorm and Mamba2's gated RMSNorm (fused forward and backward)
    kernels/diversity/       HADES's diversity loss over the slot outputs
    kernels/router/          HADES's in_proj with the router's fp32 product (one gradient sum)
    kernels/cross_entropy/   the LM head's token-level cross-entropy on bf16 logits
    kernels/linear_attn/     linear attention and retention (references only: fla's kernels on CUDA)
    kernels/delta_rule/      DeltaNet's delta rule (references only: fla's kernels on CUDA)
    kernels/companion_scan/  Sparse Mamba's scan with a companion-form state matrix
    kernels/slab.py          one gradient buffer for a split tensor, written in place by the ops

Each op folder is split as `reference.py` (plain torch: for a recurrence `<op>_step`, the
token-by-token `<op>_loop` that reads like the equation and the `<op>_chunked` form fast enough
to train on CPU; for any other op `<function>_ref`), `op.py` (autograd.Function + launcher of
the Triton kernels) and `kernel.py` (Triton). The package's public function
(`kernels.ssd.ssd_scan`, `kernels.selective_scan.selective_scan`) picks Triton for CUDA inputs
when it imports (`_triton.triton_op`), the reference otherwise. The rule and the naming
convention in full: docs/CONTRACTS.md, "Kernels".

Imports point one way: `kernels` never imports `hades`.

Name clash: Hugging Face also publishes a PyPI package called `kernels`, which transformers
probes for with `is_kernels_available()`. This repository's package shadows it on purpose (the
editable install maps the name here). Keep this module free of imports and WITHOUT a
`__version__`: transformers then reads our distribution's version (hades-repro 0.1.0, outside
the hub package's accepted range) or "N/A", and its probe stays False (tests/test_ssd_reference.py
checks both).
"""
