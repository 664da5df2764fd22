#!/usr/bin/env bash
# One call of the device tool: environment, GPU tests, benchmarks, in the stages named.
#   bash benchmarks/device_run.sh env tests ssd ss cscan conv ce parity train passkey norm diversity router
# Carried (ignored) folders: .whl/ (fla wheels, installed into /tmp/site) or .device/site312.tar.xz
# (every package the pipeline needs, scripts/device_packages.sh), .triton/ (Triton's
# compile cache from the last call, triton_cache.tgz.part-*), results/tokenizer/neox.json (the
# GPT-NeoX tokenizer, for passkey). Writes under $OUT: log.txt (tee'd by the caller), json.tgz
# (every stage's JSON), triton_cache.tgz.part-* (for the next call).
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-results/benchmarks}
mkdir -p "$OUT/json"
export PYTHONPATH="$PWD"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PWD:/tmp/site"
fi
if [ -f .device/site312.tar.xz ]; then  # or the pipeline's packages (scripts/device_packages.sh)
  mkdir -p /tmp/site && { [ -f /tmp/site/.unpacked ] || { tar xJf .device/site312.tar.xz -C /tmp/site --strip-components=1 && touch /tmp/site/.unpacked; }; } \
    && export PYTHONPATH="$PWD:/tmp/site" PATH="/tmp/site/bin:$PATH"
fi
export TRITON_CACHE_DIR=/tmp/triton_cache
mkdir -p "$TRITON_CACHE_DIR"
if ls .triton/triton_cache.tgz.part-* >/dev/null 2>&1; then cat .triton/triton_cache.tgz.part-* | tar xzf - -C "$TRITON_CACHE_DIR"; fi
JSON_OUT="$OUT/json"
status=()
run() {  # run NAME TIMEOUT_S CMD...
  local name=$1 limit=$2; shift 2
  printf '\n=== %s (limit %ss, %s) ===\n' "$name" "$limit" "$(date -u +%H:%M:%S)"
  local t0=$SECONDS
  OUT="$JSON_OUT" timeout "$limit" "$@"
  local rc=$?
  status+=("$name rc=$rc $((SECONDS - t0))s")
}
for stage in "$@"; do
  case $stage in
    env) run env 60 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; python3 -c "
import torch, triton; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__)
import fla, einops, transformers; print(\"fla\", fla.__version__, \"einops\", einops.__version__, \"transformers\", transformers.__version__)"' ;;
    tests) run tests "${TESTS_LIMIT:-300}" env HADES_GPU_TEST_LOG="$JSON_OUT/gpu_test_errors.json" \
             python3 -m pytest tests/gpu -v -n 8 -p no:cacheprovider -rfE --durations=12 ${TESTS_K:+-k "$TESTS_K"} ;;
    ssd) # the official kernels (.device/official, timed where present) autotune ~100 configs per chunk size
      run ssd "${SSD_LIMIT:-$([ -d .device/official/mamba_ssm ] && echo 540 || echo 240)}" python3 -m benchmarks.ssd ${SSD_ARGS:-} ;;
    cscan) run companion_scan "${CSCAN_LIMIT:-240}" python3 -m benchmarks.companion_scan ${CSCAN_ARGS:-} ;;
    ss) run selective_scan "${SS_LIMIT:-180}" python3 -m benchmarks.selective_scan ${SS_ARGS:-} ;;
    conv) run conv "${CONV_LIMIT:-90}" python3 -m benchmarks.conv ${CONV_ARGS:-} ;;
    norm) run norm "${NORM_LIMIT:-240}" python3 -m benchmarks.norm ${NORM_ARGS:-} ;;
    ce) run cross_entropy "${CE_LIMIT:-150}" python3 -m benchmarks.cross_entropy ${CE_ARGS:-} ;;
    parity) run parity_fla "${PARITY_LIMIT:-240}" python3 -m benchmarks.parity_fla ${PARITY_ARGS:-} ;;
    profile) run profile_layers "${PROFILE_LIMIT:-120}" python3 -m benchmarks.profile_layers ${PROFILE_ARGS:-} ;;
    train) run train_throughput "${TRAIN_LIMIT:-300}" python3 -m benchmarks.train_throughput ${TRAIN_ARGS:-} ;;
    passkey) run passkey "${PASSKEY_LIMIT:-540}" python3 benchmarks/passkey_gpu.py --tokenizer results/tokenizer/neox.json \
               --out "$JSON_OUT/passkey_gpu.json" ${PASSKEY_ARGS:-} ;;
    diversity) run diversity 120 python3 -m benchmarks.diversity ${DIVERSITY_ARGS:-} ;;
    router) run router 150 python3 -m benchmarks.router ${ROUTER_ARGS:-} ;;
    *) echo "unknown stage $stage" ;;
  esac
done
tar czf "$OUT/json.tgz" -C "$JSON_OUT" . && rm -rf "$JSON_OUT"
# the compile cache comes back in parts of <= 15 MB (the tool's per-file limit), at most 4
tar czf - -C "$TRITON_CACHE_DIR" . 2>/dev/null | split -b 15000000 - "$OUT/triton_cache.tgz.part-"
if [ "$(ls "$OUT"/triton_cache.tgz.part-* | wc -l)" -gt 4 ]; then echo "triton cache too large to bring back"; rm -f "$OUT"/triton_cache.tgz.part-*; fi
printf '\n=== stages ===\n'; printf '%s\n' "${status[@]}"
