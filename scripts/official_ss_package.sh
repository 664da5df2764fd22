#!/usr/bin/env bash
# Builds .device/official_ss/: mamba_ssm's selective-scan CUDA kernels (the reference of
# `python -m benchmarks.selective_scan --official .device/official_ss`), as a plain shared library
# launched by our benchmarks/official_ss/launch.cu (C interface, no torch extension, no torch
# symbol: it runs beside any torch of the same CUDA major version; ctypes loads it).
#
# Source: the csrc/selective_scan headers of the mamba repository at MAMBA_REV (default
# v2.3.2.post1), taken with `git archive` from MAMBA_GIT (a clone or bare mirror of
# https://github.com/state-spaces/mamba; cloned from GitHub when unset). PyPI's sdists hold no
# csrc. mamba_ssm is Copyright 2023 Tri Dao, Albert Gu, licensed under the Apache License 2.0; its
# LICENSE and AUTHORS are copied beside the code. The copy is NOT part of this repository: it
# lives only under .device/, which .gitignore excludes (the script refuses a destination inside
# the repository that git does not ignore).
#
# Needs nvcc (CUDA 13 here and on the lent H200) and a Python whose torch has the c10 headers
# (PYTHON, default python3; a CPU build lacks c10/cuda/impl/cuda_cmake_macros.h, for which an
# empty stand-in is used: no macro of it is read by these kernels). Compiles for sm_90 only
# (SM_ARCH=...), ~10 s.
#
#   MAMBA_GIT=/path/to/mamba bash scripts/official_ss_package.sh [DEST]
#
# Layout written:
#   DEST/src/csrc/selective_scan/*   the repository's files at MAMBA_REV, unmodified
#   DEST/libmamba_selective_scan.so  launch.cu built against them
#   DEST/LICENSE, DEST/AUTHORS, DEST/PROVENANCE.txt (revision, commit, nvcc, flags, registers)
set -euo pipefail
rev=${MAMBA_REV:-v2.3.2.post1}
arch=${SM_ARCH:-90}
dest=${1:-.device/official_ss}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)

# refuse a destination that git would track (the official code must never be committed)
. "$(dirname "$0")/_official_dest.sh"
refuse_tracked_dest "$dest"
command -v nvcc >/dev/null || { echo "error: nvcc not found (a CUDA toolkit is needed to build the reference)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git_dir=${MAMBA_GIT:-}
if [ -z "$git_dir" ]; then
  git clone -q --bare --filter=blob:none https://github.com/state-spaces/mamba "$work/mamba.git"
  git_dir=$work/mamba.git
fi
commit=$(git -C "$git_dir" rev-parse "$rev^{commit}") || { echo "error: no revision $rev in $git_dir" >&2; exit 1; }

rm -rf "$dest/src"
mkdir -p "$dest/src"
git -C "$git_dir" archive "$commit" csrc/selective_scan LICENSE AUTHORS | tar x -C "$dest/src"
[ -f "$dest/src/csrc/selective_scan/selective_scan_bwd_kernel.cuh" ] || { echo "error: no csrc/selective_scan at $rev" >&2; exit 1; }
mv "$dest/src/LICENSE" "$dest/LICENSE"
[ -f "$dest/src/AUTHORS" ] && mv "$dest/src/AUTHORS" "$dest/AUTHORS"

torch_inc=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')
stub=$work/stub
mkdir -p "$stub/c10/cuda/impl"
echo '#pragma once' > "$stub/c10/cuda/impl/cuda_cmake_macros.h"  # searched after torch's own
# mamba_ssm's setup.py flags for these files (less -lineinfo), one architecture
flags=(-O3 -std=c++17 -shared -Xcompiler -fPIC "-gencode=arch=compute_$arch,code=sm_$arch" --use_fast_math
       --expt-relaxed-constexpr --expt-extended-lambda -U__CUDA_NO_HALF_OPERATORS__ -U__CUDA_NO_HALF_CONVERSIONS__
       -U__CUDA_NO_BFLOAT16_OPERATORS__ -U__CUDA_NO_BFLOAT16_CONVERSIONS__)
nvcc "${flags[@]}" -Xptxas -v -I"$dest/src/csrc/selective_scan" -I"$torch_inc" -I"$stub" \
  "$here/benchmarks/official_ss/launch.cu" -o "$dest/libmamba_selective_scan.so" 2> "$work/ptxas.txt" \
  || { cat "$work/ptxas.txt" >&2; exit 1; }
if nm -D --undefined-only "$dest/libmamba_selective_scan.so" | grep -q c10; then
  echo "error: the library needs torch symbols (it must not: it is loaded beside another torch)" >&2; exit 1
fi
{
  echo "mamba (https://github.com/state-spaces/mamba) $rev = $commit, csrc/selective_scan, Apache License 2.0 (LICENSE)"
  echo "built by scripts/official_ss_package.sh on $(date -u +%Y-%m-%dT%H:%MZ) from benchmarks/official_ss/launch.cu"
  echo "nvcc: $(nvcc --version | tail -1)"
  echo "torch headers: $("$python" -c 'import torch; print(torch.__version__)')"
  echo "flags: ${flags[*]}"
  echo "ptxas (registers, spills per kernel):"
  grep -E "Function properties|spill|Used [0-9]+ registers" "$work/ptxas.txt" | sed 's/^/  /'
} > "$dest/PROVENANCE.txt"
echo "$dest: mamba $rev ($commit), $(du -sh "$dest" | cut -f1)"
