"""Evaluation: lm-eval (paper tasks and project tasks), passkey retrieval, Tables 1-2.

Modules: `harness` (lm-eval adapter, `evaluate_checkpoint`), `taskspec` (which task definition
runs, offline or not), `prepare` (benchmark distributions -> hub schema), `passkey` (+
`passkey_plot`), `tables`.
"""
