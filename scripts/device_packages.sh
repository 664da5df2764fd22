#!/usr/bin/env bash
# Builds the two archives scripts/gpu_study.sh expects, for a GPU machine that has torch, Triton,
# transformers and numpy (Python 3.12) but no network and none of the pipeline's other packages:
#   .device/site312.tar.xz      the packages of this venv that the machine lacks, as py3.12 wheels
#                               unpacked (mlflow's UI bundle and pulp left out: ~22 MB)
#   .device/shared_data.tar.xz  ../shared/data (corpus text, tokenizer, benchmark samples)
# Run from the repository root with the README's venv active, on a machine that reaches PyPI:
#   bash scripts/device_packages.sh [names of packages the GPU machine already has...]
# By default the GPU machine is taken to have the lent H200 image's packages (listed below).
set -euo pipefail
mkdir -p .device
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# what the lent GPU image ships (the device tool's KINDS.md list, read 2026-11-17)
have=${*:-"absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx
ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless
optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow
pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark
pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml
regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq
torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp"}
python - "$work/need.txt" $have <<'PY'
"""The dependency closure of the pipeline's packages in this venv, minus what the GPU machine has."""
import importlib.metadata as md
import re
import sys

norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()  # noqa: E731
out, have = sys.argv[1], {norm(n) for n in sys.argv[2:]}
seen, stack = {}, ["snakemake", "mlflow", "lm-eval", "datasets", "flash-linear-attention", "jsonschema"]
while stack:
    name = norm(stack.pop())
    if name in seen:
        continue
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        seen[name] = None
        continue
    seen[name] = dist.version
    stack += [re.match(r"[A-Za-z0-9_.\-]+", r).group(0) for r in dist.requires or [] if "extra ==" not in r]
need = sorted(f"{n}=={v}" for n, v in seen.items() if v and n not in have and n != "pulp")
open(out, "w").write("\n".join(need) + "\n")
print(f"{len(need)} packages to carry")
PY
plat=(--platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64)
mkdir -p "$work/whl" "$work/site"
while read -r req; do
  # a binary wheel for py3.12 where one exists, else a wheel built here (pure-Python sdists)
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d "$work/whl" "$req" 2>/dev/null \
    || python -m pip wheel -q --no-deps -w "$work/whl" "$req"
done < "$work/need.txt"
python -m pip install -q --no-deps --no-compile --target "$work/site" --python-version 3.12 \
  --implementation cp --only-binary=:all: "${plat[@]}" "$work"/whl/*.whl
rm -rf "$work/site/mlflow/server/js/build"  # the UI is not served there (27 MB)
tar cJf .device/site312.tar.xz -C "$work" site --transform 's,^site,site312,'
tar cJf .device/shared_data.tar.xz -C .. shared/data --transform 's,^shared/,,'
ls -la .device/site312.tar.xz .device/shared_data.tar.xz
