"""Helpers that the project's lm-eval task YAMLs call through `!function` (hades/eval/tasks/toy/)."""

from __future__ import annotations

import re


def rolling_ppl_results(doc: dict, results: list[float]) -> dict:
    """Per-document (loglikelihood, weight) pairs for the weighted-perplexity aggregations.

    Words and bytes are counted as lm-eval counts them for its loglikelihood_rolling tasks; the
    token count is the `n_tokens` field that hades/eval/taskspec.py adds with the evaluated
    model's tokenizer (absent: no token perplexity).
    """
    (loglikelihood,) = results
    text = doc["text"]
    n_bytes = len(text.encode("utf-8"))
    out = {
        "word_perplexity": (loglikelihood, len(re.split(r"\s+", text))),
        "byte_perplexity": (loglikelihood, n_bytes),
        "bits_per_byte": (loglikelihood, n_bytes),
    }
    if doc.get("n_tokens"):
        out["token_perplexity"] = (loglikelihood, int(doc["n_tokens"]))
    return out


def cloze_target(doc: dict) -> str:
    """The continuation to score, with the word-separating space lambada's targets carry
    (" " + last word) when neither side of the split has one."""
    context, continuation = doc["context"], doc["continuation"]
    if context and continuation and not context[-1].isspace() and not continuation[0].isspace():
        return " " + continuation
    return continuation
