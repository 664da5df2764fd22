#!/usr/bin/env bash
# Snakemake runs this after creating envs/eval.yaml, from the repository root.
set -euo pipefail
pip install --no-deps -e .
