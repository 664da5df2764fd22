"""Tables and the figure index of the run: Markdown/CSV/HTML writers, the analysis summary.

- `analysis_rows`: one row per analysed model with the numbers behind the paper's spectral claims
  (shared vs expert centroid, the bias' shift, the share of positive Δ_HADES − Δ), so the report
  and the docs state them as numbers next to the figures.
- `write_table` / `csv_to_html`: a table as CSV (raw values), Markdown (docs) and a standalone
  HTML page (how Snakemake's report shows a table).
- `write_index`: results/figures/index.md, a page listing every figure of the run (PNG shown,
  PDF linked) with its caption; it is the output of the `figures` rule that `rule all` requests.

Every file is written atomically (hades.io): a crash leaves the old file or none, never half a
table.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hades.io import atomic_write_bytes, atomic_write_text


def _get(d: Mapping[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _r(x: Any, nd: int = 4) -> Any:
    return round(float(x), nd) if isinstance(x, (int, float)) and not isinstance(x, bool) else x


def analysis_rows(
    spectrum_jsons: Mapping[str, str | Path],
    delta_jsons: Mapping[str, str | Path],
    labels: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """{model: spectrum.json}, {model: delta.json} -> one row per model."""
    rows = []
    for gid in dict.fromkeys([*spectrum_jsons, *delta_jsons]):
        sp = json.loads(Path(spectrum_jsons[gid]).read_text()) if gid in spectrum_jsons else {}
        de = json.loads(Path(delta_jsons[gid]).read_text()) if gid in delta_jsons else {}
        sve = _get(sp, "comparison", "shared_vs_expert")
        bias = _get(sp, "comparison", "bias_effect")
        rows.append(
            {
                "model": gid,
                "label": (labels or {}).get(gid, gid),
                "layer": sp.get("layer"),
                "centroid_shared": _r(_get(sp, "groups", "shared", "centroid")),
                "centroid_expert": _r(_get(sp, "groups", "expert", "centroid")),
                "centroid_expert_no_bias": _r(_get(sp, "groups", "expert_no_bias", "centroid")),
                "shared_lower": _get(sve, "holds"),
                "bias_raises": _get(bias, "holds"),
                "delta_fraction_positive": _r(de.get("fraction_positive")),
                "delta_tokens": de.get("n_tokens"),
            }
        )
    return rows


ANALYSIS_HEADERS = {
    "model": "grid id",
    "label": "model",
    "layer": "layer",
    "centroid_shared": "centroid shared (a)",
    "centroid_expert": "centroid expert (b)",
    "centroid_expert_no_bias": "centroid expert, no bias (c)",
    "shared_lower": "shared < expert",
    "bias_raises": "bias raises (b > c)",
    "delta_fraction_positive": "Δ_HADES − Δ > 0",
    "delta_tokens": "Δ tokens",
}


def write_index(
    figures: Sequence[str | Path], out_md: str | Path, captions: Mapping[str, str] | None = None
) -> None:
    """A Markdown page showing each PNG (with the PDF linked) and its caption, paths relative
    to the page."""
    out_md = Path(out_md)
    lines = ["# Figures of this run", ""]
    for png in sorted(Path(f) for f in figures if str(f).endswith(".png")):
        rel = os.path.relpath(png, out_md.parent)
        pdf = png.with_suffix(".pdf")
        lines.append(f"## {png.stem}")
        lines.append("")
        caption = (captions or {}).get(png.stem)
        if caption:
            lines += [caption, ""]
        lines.append(f"![{png.stem}]({rel})")
        if pdf.exists():
            lines += ["", f"PDF: [{pdf.name}]({os.path.relpath(pdf, out_md.parent)})"]
        lines.append("")
    atomic_write_text(out_md, "\n".join(lines))


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def write_table(
    rows: Sequence[Mapping[str, Any]],
    stem: str | Path,
    title: str,
    headers: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write rows as `stem`.csv (raw values), .md and .html (formatted, for docs and the report)."""
    stem = Path(stem)
    cols = list(rows[0]) if rows else list(headers or {})
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    # bytes, so csv's \r\n line ends reach the file untranslated (as open(..., newline="") did)
    atomic_write_bytes(stem.with_suffix(".csv"), buf.getvalue().encode("utf-8"))
    heads = [(headers or {}).get(c, c) for c in cols]
    md = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(md) + "\n")
    atomic_write_text(
        stem.with_suffix(".html"),
        html_table(heads, [[_fmt(r.get(c)) for c in cols] for r in rows], title),
    )
    return [stem.with_suffix(s) for s in (".csv", ".md", ".html")]


HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;font-size:14px}"
    "th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}"
    "th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}"
    "th{background:#f4f4f4}caption{font-weight:600;text-align:left;padding-bottom:.5em}"
)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str) -> str:
    """A standalone HTML page holding one table (how the report shows tables)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{HTML_STYLE}</style></head><body><table><caption>{html.escape(title)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n"
    )


def csv_to_html(csv_path: str | Path, html_path: str | Path, title: str | None = None) -> None:
    """Render a results CSV table (e.g. results/tables/table1.csv) as an HTML page for the report."""
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    headers, body = (rows[0], rows[1:]) if rows else ([], [])
    atomic_write_text(html_path, html_table(headers, body, title or Path(csv_path).stem))
