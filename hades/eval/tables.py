"""Tables 1 and 2 of the paper next to ours: results/tables/table{1,2}.{md,csv,tex}.

The paper's numbers are data here (docs/paper.md "Evaluation", Table 1; paper Appendix D, Table
2 in full). Each model gets three rows: ours, the paper's, and the difference (ours - paper).
Accuracies are in percent as in the paper, perplexities as they are. "Avg." is the mean of the 8
accuracies (hades.eval.harness.average_accuracy), shown only when all 8 exist. A metric that a
run does not have (the default study runs the project tasks, not the paper's) is "–"; the
project tasks' metrics get their own columns, after the paper's. A NaN or infinite result is
printed as such, marked "NaN!" (the Markdown lists each under the table; the CSV holds "nan"):
it is a result (a diverged model) or a fault (a damaged checkpoint), and must not pass for "not
measured".

The paper's own "Avg." is printed as is, although two rows of its Table 1 do not match the mean
of their printed accuracies: DeltaNet 41.96 (mean 41.33) and Mamba 39.73 (mean 39.47); the
Markdown tables say so under the table (paper_avg_mismatches).

Which models a table holds comes from the config: an experiment is in table T if its `table` is
T, or if its `paper_key` names a row of the paper's table T (the paper's Table 2 repeats the full
HADES model as its reference row). An experiment in table T whose `paper_key` is not a row of the
paper's table (Sparse Mamba, a baseline the paper does not run) is an extra baseline: its paper
and Δ rows are all "–", and the Markdown marks its label with † and says so under the table.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hades.io import atomic_write_text

from .harness import ACC_METRICS, AVG_KEY, PAPER_METRICS, TOY_METRICS, average_accuracy

# paper_key -> (label, values in the column order of PAPER_COLUMNS[table])
_T1_KEYS = ("wikitext/word_perplexity", "lambada_openai/perplexity", "lambada_openai/acc", "boolq/acc",
            "hellaswag/acc_norm", "winogrande/acc", "arc_easy/acc", "arc_challenge/acc_norm", "piqa/acc",
            "openbookqa/acc_norm", AVG_KEY)
# Table 2 prints PIQA before Hella and BoolQ after ARC-c (paper, Appendix D)
_T2_KEYS = ("wikitext/word_perplexity", "lambada_openai/perplexity", "lambada_openai/acc", "piqa/acc",
            "hellaswag/acc_norm", "winogrande/acc", "arc_easy/acc", "arc_challenge/acc_norm", "boolq/acc",
            "openbookqa/acc_norm", AVG_KEY)
PAPER_COLUMNS = {1: _T1_KEYS, 2: _T2_KEYS}

PAPER_TABLES: dict[int, dict[str, tuple[str, tuple[float, ...]]]] = {
    1: {
        "linear_attn": ("Linear Transformer", (45.43, 73.93, 24.06, 61.50, 28.20, 51.30, 42.05, 21.76, 60.55, 27.60, 39.63)),
        "retnet": ("RetNet", (34.12, 29.46, 35.36, 55.57, 31.31, 51.70, 44.49, 23.46, 62.40, 28.00, 41.54)),
        "deltanet": ("DeltaNet", (33.25, 26.82, 35.75, 54.07, 31.40, 49.96, 44.11, 22.18, 63.60, 29.60, 41.96)),
        "mamba": ("Mamba", (47.51, 85.53, 22.43, 62.17, 28.71, 50.67, 42.09, 22.35, 60.72, 26.60, 39.73)),
        "mamba2": ("Mamba2", (31.34, 24.38, 36.46, 53.88, 32.62, 50.83, 45.29, 24.15, 63.44, 26.40, 41.63)),
        "hades": ("HADES", (31.48, 21.74, 39.24, 58.84, 32.82, 52.64, 45.03, 22.01, 63.93, 28.80, 42.91)),
    },
    2: {
        "hades": ("HADES", (31.48, 21.74, 39.24, 63.93, 32.82, 52.64, 45.03, 22.01, 58.84, 28.80, 42.91)),
        "hades_no_balance": ("w/o L_balance", (34.73, 26.84, 36.77, 62.68, 30.96, 50.75, 43.22, 22.70, 59.27, 26.20, 41.57)),
        "hades_no_diversity": ("w/o L_diversity", (33.83, 27.40, 36.04, 62.46, 31.48, 51.38, 44.87, 22.61, 59.94, 28.40, 42.15)),
        "hades_shared_only": ("Only Shared Filters", (34.55, 27.64, 35.75, 62.40, 31.39, 52.88, 44.23, 24.23, 60.83, 26.00, 42.21)),
        "hades_expert_only": ("Only Expert Filters", (36.34, 30.12, 34.89, 61.53, 30.30, 52.41, 44.49, 22.70, 58.29, 28.80, 41.68)),
    },
}

def paper_avg_mismatches(table: int, tol: float = 0.01) -> dict[str, tuple[float, float]]:
    """paper_key -> (printed Avg., mean of the printed accuracies) where they disagree."""
    out = {}
    for key in PAPER_TABLES[table]:
        row = paper_row(table, key)
        mean = sum(row[k] for k in ACC_METRICS) / len(ACC_METRICS)
        if abs(mean - row[AVG_KEY]) > tol:
            out[key] = (row[AVG_KEY], mean)
    return out


_LABELS = {f"{t}/{m}": label for t, m, label in PAPER_METRICS + TOY_METRICS}
_LABELS[AVG_KEY] = "Avg"
DASH = "–"
# marks a NaN or infinite result (a diverged model, or a damaged checkpoint); the Markdown
# table lists each under it
NON_FINITE_MARK = "!"


def paper_row(table: int, paper_key: str | None) -> dict[str, float]:
    """The paper's numbers of one row, keyed like our metrics (accuracies in percent)."""
    if paper_key not in PAPER_TABLES[table]:
        return {}
    return dict(zip(PAPER_COLUMNS[table], PAPER_TABLES[table][paper_key][1]))


def ours_in_paper_units(metrics: Mapping[str, float]) -> dict[str, float]:
    """Our metrics as the paper prints them: accuracies x100, perplexities unchanged."""
    out = {}
    for key, value in metrics.items():
        metric = key.rsplit("/", 1)[-1]
        out[key] = 100.0 * value if (metric.startswith("acc") or key == AVG_KEY) else value
    if AVG_KEY not in out:
        avg = average_accuracy(metrics)
        if avg is not None:
            out[AVG_KEY] = 100.0 * avg
    return out


def table_members(cfg, table: int) -> list[str]:
    """Grid ids in `table`, in config order."""
    return [gid for gid, exp in cfg.experiments.items()
            if exp.table == table or (exp.paper_key is not None and exp.paper_key in PAPER_TABLES[table])]


def build_table(cfg, table: int, results: Mapping[str, Mapping[str, float]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows): rows are {"model", "label", "row" (ours/paper/delta), column: value|None}.

    `results` maps grid id -> its metrics (lm_eval.json "metrics"); models without results are
    listed with "–" for ours.
    """
    members = table_members(cfg, table)
    toy_cols = [f"{t}/{m}" for t, m, _ in TOY_METRICS
                if any(f"{t}/{m}" in results.get(gid, {}) for gid in members)]
    columns = list(PAPER_COLUMNS[table]) + toy_cols
    rows = []
    for gid in members:
        exp = cfg.experiments[gid]
        ours = ours_in_paper_units(results.get(gid, {}))
        paper = paper_row(table, exp.paper_key)
        label = exp.label
        delta = {c: ours[c] - paper[c] for c in columns if c in ours and c in paper}
        for which, values in (("ours", ours), ("paper", paper), ("delta", delta)):
            rows.append({"model": gid, "label": label, "paper_key": exp.paper_key, "row": which,
                         "extra": exp.paper_key not in PAPER_TABLES[table],
                         **{c: values.get(c) for c in columns}})
    return columns, rows


def _fmt(value: float | None, delta: bool = False) -> str:
    if value is None:
        return DASH
    if not math.isfinite(value):  # measured, but no number: never shown as "not measured"
        return ("NaN" if math.isnan(value) else f"{value:+}") + NON_FINITE_MARK
    return f"{value:+.2f}" if delta else f"{value:.2f}"


def non_finite_cells(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, float]]:
    """(model, column, value) of our results that are NaN or infinite."""
    return [(r["model"], c, r[c]) for r in rows if r["row"] == "ours"
            for c in columns if r[c] is not None and not math.isfinite(r[c])]


def _cells(columns: Sequence[str], row: Mapping[str, Any]) -> list[str]:
    return [_fmt(row[c], row["row"] == "delta") for c in columns]


_ROW_NAME = {"ours": "ours", "paper": "paper", "delta": "Δ"}


def to_markdown(table: int, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    head = ["Model", ""] + [_LABELS[c] for c in columns]
    lines = [
        f"Table {table}: ours vs the paper (Δ = ours - paper; accuracies in %, {DASH} = not measured, "
        f"{NON_FINITE_MARK} = not finite)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * len(columns)) + "|",
    ]
    for r in rows:
        name = (r["label"] + (" †" if r.get("extra") else "")) if r["row"] == "ours" else ""
        lines.append("| " + " | ".join([name, _ROW_NAME[r["row"]]] + _cells(columns, r)) + " |")
    shown = {r["model"]: r["label"] for r in rows}
    keys = {r["model"]: k for r in rows for k in [r.get("paper_key")] if k}
    notes = [
        f"- The paper prints Avg. {printed:.2f} for {shown[gid]}, but its 8 printed accuracies average "
        f"{mean:.2f}; Δ Avg. is against the printed value."
        for gid, key in keys.items()
        for mk, (printed, mean) in paper_avg_mismatches(table).items() if mk == key
    ]
    notes += [
        f"- {shown[gid]} {_LABELS[c]} = {_fmt(v)}: the evaluation gave no finite number (a diverged model or a "
        f"damaged checkpoint); see results/eval/{gid}/lm_eval.json"
        for gid, c, v in non_finite_cells(columns, rows) if c != AVG_KEY
    ]
    notes += [f"- † {label}: an extra baseline, not in the paper's Table {table}; no paper numbers."
              for label in dict.fromkeys(r["label"] for r in rows if r.get("extra"))]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def to_csv(table: int, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "model", "label", "row"] + list(columns))
    for r in rows:
        w.writerow([table, r["model"], r["label"], r["row"]]
                   + ["" if r[c] is None else f"{r[c]:.6g}" for c in columns])
    return buf.getvalue()


_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in text)


def to_latex(table: int, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    head = ["Model", ""] + [_tex(_LABELS[c]) for c in columns]
    lines = [
        "% generated by hades.eval.tables (booktabs)",
        r"\begin{tabular}{ll" + "r" * len(columns) + "}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    for i, r in enumerate(rows):
        name = _tex(r["label"]) if r["row"] == "ours" else ""
        cells = [c.replace(DASH, "--") for c in _cells(columns, r)]
        lines.append(" & ".join([name, {"ours": "ours", "paper": "paper", "delta": r"$\Delta$"}[r["row"]]] + cells) + r" \\")
        if r["row"] == "delta" and i + 1 < len(rows):
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def load_results(paths: Iterable[str | Path]) -> dict[str, dict[str, float]]:
    """grid id -> metrics, from results/eval/{model}/lm_eval.json files."""
    out = {}
    for p in paths:
        rec = json.loads(Path(p).read_text())
        out[rec["model"]] = dict(rec["metrics"])
    return out


def make_tables(cfg, results_jsons: Iterable[str | Path], out_dir: str | Path) -> list[Path]:
    """Write table{1,2}.{md,csv,tex} into out_dir (results/tables); returns the paths."""
    results = load_results(results_jsons)
    unknown = sorted(set(results) - set(cfg.experiments))
    if unknown:
        raise ValueError(f"results for unknown grid ids {unknown}; known: {', '.join(cfg.experiments)}")
    out_dir = Path(out_dir)
    written = []
    for table in (1, 2):
        columns, rows = build_table(cfg, table, results)
        for ext, render in (("md", to_markdown), ("csv", to_csv), ("tex", to_latex)):
            path = out_dir / f"table{table}.{ext}"
            atomic_write_text(path, render(table, columns, rows))
            written.append(path)
    return written
