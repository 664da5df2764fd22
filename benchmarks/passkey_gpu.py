"""Time the paper's passkey grid with a randomly initialised paper-scale model (issue 5).

    python benchmarks/passkey_gpu.py --model hades            # config/paper.yaml's grid, CUDA, bf16
    python benchmarks/passkey_gpu.py --model mamba2 --out results/benchmarks/passkey_gpu_mamba2.json

The grid is config/paper.yaml's passkey section (lengths 1K..16K by 1K, 11 depths, 10 trials:
1,760 prompts, 15M prompt tokens) run exactly as the `passkey` rule runs it
(hades.eval.passkey.run_passkey: one parallel prefill per batch, then recurrent steps). Goal:
<= 15 minutes on one H100 for a ~370M model. A warm-up at the shortest length (Triton compiles,
CUDA context) is timed separately. Random weights answer nothing right: only the time matters.

On CPU (--device cpu --config config/config.yaml ...) it is a smoke test of the same path.

The tokenizer is the GPT-NeoX-20B file (vocab 50,277, as the paper): found in shared/data or
../shared/data, else pass --tokenizer. On a machine that gets only the work tree, copy it to an
ignored path first, e.g. `mkdir -p results/tokenizer && cp ../shared/data/tokenizers/gpt-neox-20b/
tokenizer.json results/tokenizer/neox.json`, ship results/tokenizer along, and pass
`--tokenizer results/tokenizer/neox.json`. Keep TRITON_CACHE_DIR between runs to skip recompiles.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_CANDIDATES = (
    REPO / "shared" / "data" / "tokenizers" / "gpt-neox-20b" / "tokenizer.json",
    REPO.parent / "shared" / "data" / "tokenizers" / "gpt-neox-20b" / "tokenizer.json",
)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "config" / "paper.yaml"))
    p.add_argument("--model", default="hades", help="grid id of the config (its model section is used)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the GPT-NeoX file in shared/data)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16", help="bf16 = autocast, as the rule runs on GPU")
    p.add_argument("--lengths", type=_ints, default=None, help="comma list (default: the config's)")
    p.add_argument("--depths", type=_floats, default=None)
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--key-digits", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--out", default=None, help="write the timings as JSON here")
    return p.parse_args(argv)


def find_tokenizer(arg: str | None, cfg) -> Path:
    candidates = [Path(arg)] if arg else [*TOKENIZER_CANDIDATES, Path(cfg.tokenizer.get("path", ""))]
    for path in candidates:
        if path.is_file():
            return path
    sys.exit(f"error: no tokenizer.json at {', '.join(map(str, candidates))}; pass --tokenizer")


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from hades.config import load_config
    from hades.data.tokenizer import load_tokenizer
    from hades.eval.passkey import run_passkey
    from hades.models import build_model

    cfg = load_config(args.config)
    pk = cfg.passkey
    lengths = args.lengths or list(pk.lengths)
    depths = args.depths or list(pk.depths)
    trials = args.trials or pk.trials
    key_digits = args.key_digits or pk.key_digits
    batch_size = args.batch_size or pk.batch_size
    tok = load_tokenizer(find_tokenizer(args.tokenizer, cfg))

    device = torch.device(args.device)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model = build_model(cfg.experiment(args.model).model, vocab_size=len(tok)).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    build_s = time.perf_counter() - t0
    amp = torch.bfloat16 if args.dtype == "bf16" else None
    print(f"{args.model}: {n_params / 1e6:.1f}M parameters, vocab {len(tok)}, on {device} ({args.dtype}), "
          f"built in {build_s:.1f}s", flush=True)
    kw = dict(key_digits=key_digits, max_length=pk.max_length, batch_size=batch_size, seed=cfg.seed,
              autocast_dtype=amp)

    warmup_s = 0.0
    if not args.no_warmup:
        t0 = time.perf_counter()
        run_passkey(model, tok, [min(lengths)], depths[:1], min(trials, batch_size), **kw)
        warmup_s = time.perf_counter() - t0
        print(f"warm-up ({min(lengths)} tokens): {warmup_s:.1f}s", flush=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    res = run_passkey(model, tok, lengths, depths, trials, progress=lambda m: print(m, flush=True), **kw)
    n_prompts = len(lengths) * len(depths) * trials
    report = {
        "model": args.model,
        "config": args.config,
        "parameters": n_params,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "dtype": args.dtype,
        "batch_size": batch_size,
        "lengths": lengths,
        "depths": depths,
        "trials": trials,
        "prompts": n_prompts,
        "prompt_tokens": sum(lengths) * len(depths) * trials,
        "warmup_s": round(warmup_s, 2),
        "grid_s": res["elapsed_s"],
        "per_length_s": res["per_length_s"],
        "accuracy": sum(r["score"] for r in res["rows"]) / n_prompts,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "torch": torch.__version__,
    }
    print(f"passkey grid: {n_prompts} prompts, {report['prompt_tokens'] / 1e6:.1f}M tokens, "
          f"{res['elapsed_s']:.1f}s ({res['elapsed_s'] / 60:.2f} min; goal <= 15 min), "
          f"warm-up {warmup_s:.1f}s, peak memory {report['peak_memory_gib']} GiB", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
