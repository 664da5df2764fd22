#!/usr/bin/env bash
# Snakemake runs this after creating envs/analysis.yaml, with the env activated, to install this
# repository into it. It runs a copy of this file, kept beside the env (.snakemake/conda of the
# working directory, or --conda-prefix), from the working directory (--directory moves it):
# neither the cwd nor this file's path leads to the repository, so the Snakefile exports its own
# directory as HADES_REPO_ROOT. Run by hand from envs/ of a checkout, this file's directory serves.
set -euo pipefail
root="${HADES_REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
if [[ ! -f "$root/pyproject.toml" || ! -d "$root/hades" ]]; then
  echo "post-deploy: $root is not the HADES repository; set HADES_REPO_ROOT to the checkout" >&2
  exit 1
fi
pip install --no-deps -e "$root"
