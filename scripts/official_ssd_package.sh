#!/usr/bin/env bash
# Builds .device/official/: the official Mamba2 SSD Triton kernels (mamba_ssm's
# `mamba_chunk_scan_combined`, mamba_ssm/ops/triton/ssd_combined.py and the pure-Python files it
# imports) for `python -m benchmarks.ssd --official .device/official` on a GPU machine that has
# torch, Triton, einops and packaging but no network and no mamba_ssm (its PyPI release is a
# source distribution of CUDA extensions; building it takes a CUDA toolchain and ~30 minutes).
#
# Source: mamba-ssm 2.2.4 (default; MAMBA_SSM_VERSION=... for another release), the sdist from
# PyPI, sha256-checked. Not built: only its Python files are copied. mamba_ssm is
# Copyright 2023 Tri Dao, Albert Gu, licensed under the Apache License 2.0; its LICENSE and AUTHORS
# are copied beside the code. The copy is NOT part of this repository: it lives only under
# .device/, which .gitignore excludes (the script refuses a destination inside the repository
# that git does not ignore).
#
# Layout written (the sdist's own package __init__.py files import the CUDA extensions
# selective_scan_cuda and causal_conv1d; here every __init__.py is empty, the sdist's files are
# unmodified):
#   DEST/mamba_ssm/__init__.py, ops/__init__.py, ops/triton/__init__.py, utils/__init__.py,
#        modules/__init__.py                          empty
#   DEST/mamba_ssm/ops/triton/ssd_*.py, layernorm_gated.py, softplus.py, k_activations.py,
#   DEST/mamba_ssm/utils/torch.py (, utils/determinism.py from 2.3 on)
#                                                     the files ssd_combined.py imports at module
#                                                     level, followed transitively
#   DEST/mamba_ssm/modules/ssd_minimal.py             the paper's Listing 1 (a plain-torch reference)
#   DEST/LICENSE, DEST/AUTHORS, DEST/PROVENANCE.txt   licence, authors, version/URL/sha256/files
# causal_conv1d is imported inside try/except (optional); selective_scan_interface and the
# `selective_scan` extension only inside reference functions that the benchmark does not call.
#
# Run from the repository root on a machine that reaches PyPI (about 100 KB downloaded):
#   bash scripts/official_ssd_package.sh [DEST]        # DEST defaults to .device/official
# With PYTHON set to an interpreter that has torch + triton (e.g. PYTHON=/work/tvenv-o/bin/python)
# the script also imports mamba_chunk_scan_combined from DEST as a smoke test.
set -euo pipefail
version=${MAMBA_SSM_VERSION:-2.2.4}
dest=${1:-.device/official}
# sha256 of the sdists checked here (PyPI's simple index gives the digest of any other release)
declare -A known_sha=(
  [2.2.4]=e4114c69302796c91b71e90032c2d974f611608fab331582a80de6eaf075efb9
  [2.3.2.post1]=104cc47e9101e5401a675fa2b784f2952b9b037f3b1dd83b5ac544394e95d028
)

# refuse a destination that git would track (the official code must never be committed)
. "$(dirname "$0")/_official_dest.sh"
refuse_tracked_dest "$dest"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# `pip download --no-binary :all:` would build the sdist's metadata (setup.py imports torch and
# wheel), so the archive is fetched directly; its URL and digest come from PyPI's simple index.
read -r url sha < <(curl -fsSL https://pypi.org/simple/mamba-ssm/ | python3 -c '
import re, sys
v = sys.argv[1]
m = re.search(r"href=\"([^\"#]*/mamba_ssm-" + re.escape(v) + r"\.tar\.gz)#sha256=([0-9a-f]{64})\"", sys.stdin.read())
print(*(m.groups() if m else ("", "")))' "$version") || true
[ -n "${url:-}" ] && [ -n "${sha:-}" ] || { echo "error: no sdist of mamba-ssm $version found on PyPI" >&2; exit 1; }
want=${known_sha[$version]:-$sha}
[ "$sha" = "$want" ] || { echo "error: PyPI reports sha256 $sha for $version, expected $want" >&2; exit 1; }
curl -fsSL -o "$work/sdist.tar.gz" "$url"
echo "$want  $work/sdist.tar.gz" | sha256sum -c --quiet -
tar xzf "$work/sdist.tar.gz" -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'mamba_ssm-*' | head -1)
[ -f "$src/mamba_ssm/ops/triton/ssd_combined.py" ] || { echo "error: no mamba_ssm/ops/triton/ssd_combined.py in the sdist" >&2; exit 1; }

rm -rf "$dest/mamba_ssm"
mkdir -p "$dest"
# follow the module-level `from mamba_ssm.X import` / `import mamba_ssm.X` lines (column 0; the
# indented ones sit in functions the benchmark does not call) from the two seeds
python3 - "$src" "$dest" <<'EOF'
import os, re, shutil, sys
src, dest = sys.argv[1:]
todo = ["mamba_ssm.ops.triton.ssd_combined", "mamba_ssm.modules.ssd_minimal"]
done = []
pat = re.compile(r"^(?:from\s+(mamba_ssm(?:\.\w+)+)\s+import|import\s+(mamba_ssm(?:\.\w+)+))", re.M)
while todo:
    mod = todo.pop()
    if mod in done:
        continue
    rel = mod.replace(".", "/") + ".py"
    if not os.path.isfile(os.path.join(src, rel)):
        sys.exit(f"error: {mod} is imported but not in the sdist")
    done.append(mod)
    text = open(os.path.join(src, rel)).read()
    todo += [a or b for a, b in pat.findall(text)]
for mod in sorted(done):
    rel = mod.replace(".", "/") + ".py"
    os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
    shutil.copyfile(os.path.join(src, rel), os.path.join(dest, rel))
    # every package above it gets an empty __init__.py (the sdist's would import CUDA extensions)
    parts = mod.split(".")[:-1]
    for i in range(1, len(parts) + 1):
        open(os.path.join(dest, *parts[:i], "__init__.py"), "w").close()
    print("  copied", rel)
EOF
cp "$src/LICENSE" "$dest/LICENSE"
[ -f "$src/AUTHORS" ] && cp "$src/AUTHORS" "$dest/AUTHORS"
{
  echo "mamba-ssm $version (https://github.com/state-spaces/mamba), Apache License 2.0 (LICENSE)"
  echo "sdist: $url"
  echo "sha256: $want"
  echo "built by scripts/official_ssd_package.sh on $(date -u +%Y-%m-%dT%H:%MZ); files unmodified, every __init__.py empty:"
  (cd "$dest" && find mamba_ssm -name '*.py' | sort)
} > "$dest/PROVENANCE.txt"

if [ -n "${PYTHON:-}" ]; then
  PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$dest" "$PYTHON" -c 'from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined; print("  import ok:", mamba_chunk_scan_combined.__module__)'
fi
echo "$dest: mamba-ssm $version, $(du -sh "$dest" | cut -f1)"
