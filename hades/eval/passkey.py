"""Passkey retrieval (docs/paper.md "Passkey retrieval"; paper Appendix C.2, Figure 3).

The LongLoRA formulation (Chen et al., 2024): a task description, filler text repeated, the line
"The pass key is K. Remember it. K is the pass key." inserted at a depth, then the question "What
is the pass key? The pass key is"; greedy decoding of the key's tokens; exact match. Paper grid:
lengths 1K..16K by 1K, depths 0%..100% by 10%, 10 trials (score = correct out of 10), no
long-context fine-tuning.

Prompts are assembled from token ids, so every prompt is exactly `length` tokens:

    [description "\\n"] [filler: n_before tokens] ["\\n" key line "\\n"] [filler: n_after] ["\\n" question]

n_before = round(depth * n_filler), n_filler = length minus the fixed parts (the key line's
length depends on the key's tokenization, so n_filler is per prompt). Depth 0 puts the key line
right after the description, depth 1 right before the question. As in LongLoRA (which cuts its
filler by characters) the filler may end mid-sentence. Because every prompt of a length has the
same token count, the prompts of one length (all depths and trials) batch without padding.

Decoding: one parallel `model.prefill` over the batch, then `model.step` per generated token
with the recurrent state; as many tokens as the key has in the tokenizer (" " + key). Greedy
decoding is causal, so decoding a batch to its longest answer and cutting each row to its own
answer length gives the same tokens as decoding each prompt alone.
"""

from __future__ import annotations

import contextlib
import csv
import io
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hades.io import atomic_write_text, write_json

TASK_DESCRIPTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"

class PasskeyError(ValueError):
    """A passkey request that cannot run (length beyond the allowed maximum, too short, ...)."""


@dataclass(frozen=True)
class PasskeyPrompt:
    length: int
    depth: float
    trial: int
    key: str
    input_ids: tuple[int, ...]  # exactly `length` ids
    key_start: int  # index of the first token of the key line (its leading "\n")
    key_line_len: int
    answer_len: int  # tokens to decode: len(tokenize(" " + key))


class PromptBuilder:
    """Token-level prompt assembly for one tokenizer (pieces are tokenized once and cached)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.head = self._enc(TASK_DESCRIPTION + "\n")
        self.question = self._enc("\n" + QUESTION)
        self._filler: list[int] = []
        self._filler_reps = 0

    def _enc(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def filler(self, n: int) -> list[int]:
        """The first n tokens of the filler text repeated (tokenized as one long text)."""
        while len(self._filler) < n:
            self._filler_reps = max(64, 2 * self._filler_reps)
            self._filler = self._enc(" ".join([FILLER] * self._filler_reps))
        return self._filler[:n]

    def fixed_tokens(self, key: str) -> int:
        return len(self.head) + len(self.key_line(key)) + len(self.question)

    def key_line(self, key: str) -> list[int]:
        return self._enc("\n" + KEY_LINE.format(key=key) + "\n")

    def build(self, length: int, depth: float, key: str, trial: int = 0) -> PasskeyPrompt:
        if not 0.0 <= depth <= 1.0:
            raise PasskeyError(f"passkey depth {depth} is outside [0, 1]")
        line = self.key_line(key)
        n_filler = length - len(self.head) - len(line) - len(self.question)
        if n_filler < 0:
            raise PasskeyError(
                f"passkey length {length} is shorter than the prompt's fixed parts "
                f"({self.fixed_tokens(key)} tokens)"
            )
        n_before = round(depth * n_filler)
        ids = self.head + self.filler(n_before) + line + self.filler(n_filler - n_before) + self.question
        assert len(ids) == length, f"prompt has {len(ids)} tokens, target {length}"
        return PasskeyPrompt(
            length=length, depth=depth, trial=trial, key=key, input_ids=tuple(ids),
            key_start=len(self.head) + n_before, key_line_len=len(line),
            answer_len=len(self._enc(" " + key)),
        )


def make_key(seed: int, length: int, depth: float, trial: int, digits: int) -> str:
    """A reproducible random key of `digits` digits (no leading zero), one per grid cell/trial."""
    rng = random.Random(f"passkey-{seed}-{length}-{depth:.4f}-{trial}")
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def check_lengths(lengths: Iterable[int], max_length: int | None) -> None:
    for length in lengths:
        if max_length is not None and length > max_length:
            raise PasskeyError(
                f"passkey length {length} exceeds passkey.max_length {max_length}; raise passkey.max_length "
                f"or drop the length"
            )


def build_prompts(
    tokenizer, lengths: Sequence[int], depths: Sequence[float], trials: int, key_digits: int,
    seed: int = 0, max_length: int | None = None,
) -> list[PasskeyPrompt]:
    check_lengths(lengths, max_length)
    builder = PromptBuilder(tokenizer)
    return [
        builder.build(length, depth, make_key(seed, length, depth, t, key_digits), t)
        for length in lengths for depth in depths for t in range(trials)
    ]


@torch.no_grad()
def greedy_decode(model, input_ids: torch.Tensor, n_new: int) -> torch.Tensor:
    """input_ids (B, T) of equal length -> (B, n_new) greedy tokens: one parallel prefill, then
    one recurrent step per token."""
    logits, state = model.prefill(input_ids)
    out = []
    for i in range(n_new):
        nxt = logits.argmax(-1)
        out.append(nxt)
        if i + 1 < n_new:
            logits, state = model.step(nxt, state)
    return torch.stack(out, dim=1)


def run_passkey(
    model,
    tokenizer,
    lengths: Sequence[int],
    depths: Sequence[float],
    trials: int,
    key_digits: int,
    *,
    max_length: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the grid; returns {"rows": [{length, depth, score, trials}], "trials": [...], "elapsed_s",
    "per_length_s"}. A length above max_length raises PasskeyError before any work."""
    prompts = build_prompts(tokenizer, lengths, depths, trials, key_digits, seed, max_length)
    device = next(model.parameters()).device
    model.eval()
    details = []
    per_length = {}
    t_start = time.perf_counter()
    for length in lengths:
        t0 = time.perf_counter()
        group = [p for p in prompts if p.length == length]
        for i in range(0, len(group), batch_size):
            chunk = group[i : i + batch_size]
            ids = torch.tensor([p.input_ids for p in chunk], dtype=torch.long, device=device)
            n_new = max(p.answer_len for p in chunk)
            amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
            with amp:
                gen = greedy_decode(model, ids, n_new).tolist()
            for p, toks in zip(chunk, gen):
                answer = tokenizer.decode(toks[: p.answer_len], skip_special_tokens=True).strip()
                details.append({"length": p.length, "depth": p.depth, "trial": p.trial, "key": p.key,
                                "answer": answer, "answer_ids": toks[: p.answer_len], "correct": answer == p.key})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        per_length[length] = round(time.perf_counter() - t0, 3)
        if progress:
            progress(f"passkey length {length}: {per_length[length]:.1f}s")
    rows = []
    for length in lengths:
        for depth in depths:
            cell = [d for d in details if d["length"] == length and d["depth"] == depth]
            rows.append({"length": length, "depth": depth, "score": sum(d["correct"] for d in cell),
                         "trials": len(cell)})
    return {"rows": rows, "trials": details, "elapsed_s": round(time.perf_counter() - t_start, 3),
            "per_length_s": per_length}


# --- files -------------------------------------------------------------------------------------


CSV_FIELDS = ("length", "depth", "score", "trials")


def write_csv(rows: Sequence[dict], path: str | Path) -> None:
    """results/passkey/{model}/passkey.csv (length, depth, score, trials), written atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in CSV_FIELDS})
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{"length": int(r["length"]), "depth": float(r["depth"]), "score": int(r["score"]),
                 "trials": int(r["trials"])} for r in csv.DictReader(f)]


def summary_metrics(rows: Sequence[dict]) -> dict[str, float]:
    """Scalar summaries for MLflow: overall accuracy and accuracy per length."""
    total = sum(r["trials"] for r in rows) or 1
    out = {"accuracy": sum(r["score"] for r in rows) / total}
    for length in sorted({r["length"] for r in rows}):
        cell = [r for r in rows if r["length"] == length]
        out[f"accuracy_len{length}"] = sum(r["score"] for r in cell) / (sum(r["trials"] for r in cell) or 1)
    return out


def passkey_checkpoint(checkpoint_dir: str | Path, cfg, grid_id: str, out_csv: str | Path,
                       device: str | None = None) -> dict[str, Any]:
    """The `passkey` rule's unit of work: the config's grid (cfg.passkey) on one checkpoint.

    Writes out_csv (length, depth, score, trials) and passkey.json beside it (per-trial keys and
    answers, settings, the config, the checkpoint's provenance), then logs summary metrics into
    the model's MLflow run (prefix "passkey").
    """
    from .harness import config_record, load_checkpoint, log_metrics_to_mlflow

    pk = cfg.passkey
    lengths = list(pk.lengths)
    check_lengths(lengths, pk.max_length)  # refuse before loading anything
    model, tokenizer, provenance = load_checkpoint(checkpoint_dir, device, cfg.experiment(grid_id).model)
    autocast = torch.bfloat16 if model.device.type == "cuda" else None
    res = run_passkey(
        model, tokenizer, lengths, list(pk.depths), pk.trials,
        pk.key_digits, max_length=pk.max_length, batch_size=pk.batch_size,
        seed=cfg.seed, autocast_dtype=autocast,
    )
    out_csv = Path(out_csv)
    record = {
        "model": grid_id,
        "rows": res["rows"],
        "trials": res["trials"],
        "settings": {**{k: v for k, v in cfg.raw_section("passkey").items() if k != "models"}, "device": str(model.device),
                     "precision": "bf16-autocast" if autocast else "fp32"},
        "prompt": {"task_description": TASK_DESCRIPTION, "filler": FILLER, "key_line": KEY_LINE, "question": QUESTION},
        "elapsed_s": res["elapsed_s"],
        "per_length_s": res["per_length_s"],
        "config": config_record(cfg, grid_id),
        "checkpoint": provenance,
    }
    write_json(out_csv.with_suffix(".json"), record, sort_keys=False, default=str)
    write_csv(res["rows"], out_csv)
    log_metrics_to_mlflow(cfg, grid_id, summary_metrics(res["rows"]), prefix="passkey", artifact=out_csv)
    return record


__all__ = [
    "PasskeyError", "PasskeyPrompt", "PromptBuilder", "build_prompts", "greedy_decode", "make_key",
    "passkey_checkpoint", "read_csv", "run_passkey", "summary_metrics", "write_csv",
]
