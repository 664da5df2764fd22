#!/usr/bin/env bash
# The one-GPU study (config/gpu.yaml) on a lent GPU machine that has torch and Triton but no
# network and none of the pipeline's other packages:
#   bash scripts/gpu_study.sh [snakemake args...]        e.g. --until train, or nothing
# Expects, carried next to the working tree (ignored by git; `bash scripts/device_packages.sh`
# makes the two archives on a machine that reaches PyPI; with the device tool: carry [".device"]):
#   .device/site312.tar.xz      the pipeline's packages for the machine's Python (3.12), unpacked
#                               into /tmp/site: snakemake, mlflow, lm-eval, datasets, fla, ...
#   .device/shared_data.tar.xz  ../shared/data (corpus text, tokenizer, benchmark samples)
#   .device/triton/*.part-*     optional: Triton's compile cache from an earlier call
# STUDY_SIDE_TESTS="<pytest -k expression>" runs those GPU tests beside the study ($OUT/side_tests.log).
# Writes under $OUT (or results/device): study.log, results.tgz (everything but checkpoints and
# token shards), triton cache parts for the next call.
set -uo pipefail
OUT=${OUT:-results/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export TRITON_CACHE_DIR=/tmp/triton_cache HF_HOME=/tmp/hf_home
mkdir -p /tmp/site "$TRITON_CACHE_DIR"
t0=$SECONDS
if [ ! -f /tmp/site/.unpacked ]; then
  tar xJf .device/site312.tar.xz -C /tmp/site --strip-components=1 && touch /tmp/site/.unpacked || exit 1
fi
export PYTHONPATH="$PWD:/tmp/site" PATH="/tmp/site/bin:$PATH"
if [ ! -d ../shared/data ]; then
  mkdir -p ../shared && tar xJf .device/shared_data.tar.xz -C ../shared || exit 1
fi
if ls .device/triton/*.part-* >/dev/null 2>&1; then cat .device/triton/*.part-* | tar xzf - -C "$TRITON_CACHE_DIR"; fi
echo "unpacked in $((SECONDS - t0)) s"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 - <<'PY'
import torch, triton, transformers, lm_eval, mlflow, snakemake, fla
print("python", __import__("sys").version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| triton", triton.__version__, "| transformers", transformers.__version__, "| lm_eval", lm_eval.__version__,
      "| mlflow", mlflow.__version__, "| snakemake", snakemake.__version__, "| fla", fla.__version__)
PY
git log -1 --format='commit %H %s' 2>/dev/null || true
date -u +"start %Y-%m-%dT%H:%M:%SZ"
side=
if [ -n "${STUDY_SIDE_TESTS:-}" ]; then  # GPU tests (a pytest -k expression) beside the study, log under $OUT
  timeout "${STUDY_SIDE_TIMEOUT_S:-300}" python3 -m pytest tests/gpu -p no:cacheprovider -rfE -q -k "$STUDY_SIDE_TESTS" \
    > "$OUT/side_tests.log" 2>&1 &
  side=$!
fi
t1=$SECONDS
# greedy scheduler: the ILP one needs pulp, which is not carried (16 MB); one GPU, so the GPU
# jobs share it (small models: several trainings at once keep it busier than one)
# (a time limit below the device call's, so that what finished still comes back; a rerun resumes)
timeout "${STUDY_TIMEOUT_S:-540}" python3 -m snakemake --cores all --configfile config/gpu.yaml --scheduler greedy \
  --resources gpu="${STUDY_GPU_JOBS:-8}" \
  --keep-going --printshellcmds "$@"
rc=$?
echo "snakemake exit $rc after $((SECONDS - t1)) s (DAG wall time)"
date -u +"end %Y-%m-%dT%H:%M:%SZ"
if [ -n "$side" ]; then wait "$side"; echo "side tests exit $?: $(tail -n 1 "$OUT/side_tests.log")"; fi
# what comes back: every result file except checkpoints, token shards and the corpus copy
tar czf "$OUT/results.tgz" --exclude='results/checkpoints' --exclude='results/data/tokens/*.bin' \
  --exclude='results/data/corpus' --exclude='results/eval_data' --exclude='results/device' results .snakemake/log 2>/dev/null
ls -la "$OUT/results.tgz"
if [ "${STUDY_TRITON_BACK:-1}" = 1 ]; then  # the tool brings back 8 files: 3-4 of them would be this
  tar czf - -C "$TRITON_CACHE_DIR" . 2>/dev/null | split -b 15000000 - "$OUT/triton.part-"
  n=$(ls "$OUT"/triton.part-* | wc -l)
  if [ "$n" -gt 4 ]; then echo "triton cache: $n parts, too large to bring back"; rm -f "$OUT"/triton.part-*; fi
fi
exit $rc
