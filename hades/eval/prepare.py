"""Convert the common distributions of the paper's nine benchmarks into the schema that the stock
lm-eval task reads from the Hugging Face hub, for offline evaluation (`hades prepare-eval-data`).

Compute nodes of clusters are often offline, and the original releases of these datasets are not
in the hub's layout (../shared/data/SOURCES.md lists the ones we test on). Each converter
recognises a few layouts by their fields, writes `DST/<split>.jsonl` -- `<split>` being the split
the stock task evaluates (EVAL_SPLIT) -- plus `DST/prepared.json` (source, checksum, layout), and
refuses anything else with a one-line message. The offline task YAMLs in hades/eval/tasks/offline/
then read that file; nothing else about the stock task changes.

| task | layouts recognised | hub schema written |
|---|---|---|
| wikitext | WikiText text files (wiki.*.tokens / wiki.*.raw / valid.txt), jsonl {page} | {page} per article |
| lambada_openai | jsonl {text} (OpenAI detokenised test set) | {text} |
| piqa | jsonl {goal, sol1, sol2} + labels file (`<name>-labels.lst`), jsonl with label | {goal, sol1, sol2, label:int} |
| hellaswag | llama.cpp text export (6 lines per item), jsonl {ctx_a, ctx_b, endings, label, ...} | {activity_label, ctx_a, ctx_b, endings, label:str, ...} |
| winogrande | jsonl {sentence, option1, option2, answer, ...extra fields} | {sentence, option1, option2, answer:str} |
| arc_easy, arc_challenge | AI2 jsonl {id, question: {stem, choices: [{text, label}]}, answerKey}, hub jsonl | {id, question, choices: {text, label}, answerKey} |
| boolq | SuperGLUE jsonl (label "true"/"false", bool or 0/1), original BoolQ jsonl {answer: bool} | {question, passage, idx, label:int} |
| openbookqa | official TSV (ID, Question Stem, Choices, ..., Answer Key), AI2 jsonl, hub jsonl | {id, question_stem, choices: {text, label}, answerKey} |

Known, unavoidable differences from the hub copies are noted at each converter (e.g. the
HellaSwag text export has lost the ctx_a/ctx_b split; the shared WikiText copy is the tokenized
v1 text with <unk>).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hades.data.io import utf8_problem
from hades.io import fsync_path, sha256_file

# The split each stock lm-eval task evaluates (its test_split, else its validation_split).
EVAL_SPLIT = {
    "wikitext": "test",
    "lambada_openai": "test",
    "piqa": "validation",
    "hellaswag": "validation",
    "winogrande": "validation",
    "arc_easy": "test",
    "arc_challenge": "test",
    "boolq": "validation",
    "openbookqa": "test",
}
PAPER_TASKS = tuple(EVAL_SPLIT)
PREPARED_META = "prepared.json"


class PrepareError(ValueError):
    """A source that cannot be converted; the message is one line naming task, file and why."""


def prepared_file(task: str, data_dir: str | Path) -> Path:
    """Where the prepared eval split of `task` lives inside a prepared dir."""
    return Path(data_dir) / f"{EVAL_SPLIT[task]}.jsonl"


# --- readers ----------------------------------------------------------------------------------


def _read_jsonl(path: Path, task: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise PrepareError(
                    f"{task}: {path}: line {i} is not JSON; expected a .jsonl file in one of the layouts "
                    f"of hades/eval/prepare.py"
                ) from None
            if not isinstance(row, dict):
                raise PrepareError(f"{task}: {path}: line {i} is a JSON {type(row).__name__}, expected an object")
            rows.append(row)
    if not rows:
        raise PrepareError(f"{task}: {path}: no records")
    return rows


def _looks_like_jsonl(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def _unknown(task: str, path: Path, keys: Iterable[str], expected: str) -> PrepareError:
    return PrepareError(
        f"{task}: {path}: unrecognised layout (first record has fields {sorted(keys)}); expected {expected}"
    )


def _single_file(task: str, src: Path, patterns: tuple[str, ...]) -> Path:
    """A source given as a directory must hold exactly one file matching `patterns`."""
    if src.is_file():
        return src
    if not src.exists():
        raise PrepareError(f"{task}: source {src} does not exist")
    found = sorted({p for pat in patterns for p in src.glob(pat) if p.is_file()})
    if len(found) != 1:
        raise PrepareError(
            f"{task}: source directory {src} must contain exactly one of {list(patterns)}, found "
            f"{[p.name for p in found] or 'none'}; pass the file itself"
        )
    return found[0]


# --- converters: (task, src) -> (layout name, records) -------------------------------------------


def _wikitext(task: str, src: Path) -> tuple[str, list[dict]]:
    """WikiText text -> one record per article ({"page"}), as EleutherAI/wikitext_document_level.

    An article starts at a top-level heading line ` = Title = ` (not ` = = Section = = `); the
    page is its lines joined with "\\n". The stock task detokenizes the page and counts words on
    it, so raw (wiki.*.raw) and tokenized (wiki.*.tokens) files both convert; the tokenized one
    keeps its <unk> tokens (lm-eval's task uses the raw text: numbers are then not comparable).
    """
    path = _single_file(task, src, ("*.jsonl", "*.tokens", "*.raw", "*.txt"))
    if _looks_like_jsonl(path):
        rows = _read_jsonl(path, task)
        if "page" not in rows[0]:
            raise _unknown(task, path, rows[0], 'jsonl {"page"} or a WikiText text file')
        return "jsonl-page", [{"page": str(r["page"])} for r in rows]
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    pages, current = [], []
    for line in lines:
        if _is_article_heading(line) and any(s.strip() for s in current):
            pages.append("\n".join(current))
            current = []
        current.append(line)
    if any(s.strip() for s in current):
        pages.append("\n".join(current))
    if not any(_is_article_heading(line) for line in lines):
        raise PrepareError(
            f"{task}: {path}: no ' = Title = ' article headings found; expected a WikiText file "
            f"(wiki.test.raw / wiki.test.tokens)"
        )
    return "wikitext-text", [{"page": p} for p in pages]


def _is_article_heading(line: str) -> bool:
    s = line.replace("= = =", "===").replace("= =", "==").strip()
    return s.startswith("= ") and s.endswith(" =") and not s.startswith("= =") and len(s) > 3


def _lambada(task: str, src: Path) -> tuple[str, list[dict]]:
    path = _single_file(task, src, ("*.jsonl",))
    if not _looks_like_jsonl(path):
        raise PrepareError(
            f"{task}: {path}: not a jsonl file; lambada_openai needs the OpenAI detokenized test set "
            f'as jsonl {{"text"}} (the original plain-text LAMBADA release is a different benchmark)'
        )
    rows = _read_jsonl(path, task)
    if set(rows[0]) != {"text"} and "text" not in rows[0]:
        raise _unknown(task, path, rows[0], 'jsonl {"text"}')
    for i, r in enumerate(rows):
        if " " not in str(r.get("text", "")).strip():
            raise PrepareError(f"{task}: {path}: record {i + 1} has no final word to predict")
    return "jsonl-text", [{"text": str(r["text"])} for r in rows]


def _piqa(task: str, src: Path) -> tuple[str, list[dict]]:
    """PIQA: the AI2 release is {id, goal, sol1, sol2} lines plus a labels file with one 0/1 per
    line (dev.jsonl + dev-labels.lst, = valid.jsonl + valid-labels.lst)."""
    path = _single_file(task, src, ("*.jsonl",))
    rows = _read_jsonl(path, task)
    if not {"goal", "sol1", "sol2"} <= set(rows[0]):
        raise _unknown(task, path, rows[0], "jsonl {goal, sol1, sol2} (+ a -labels.lst file) or with label")
    if "label" in rows[0]:
        return "jsonl-labelled", [_piqa_row(r, r["label"], task, path) for r in rows]
    labels_path = path.with_name(f"{path.stem}-labels.lst")
    if not labels_path.is_file():
        raise PrepareError(
            f"{task}: {path} has no labels and {labels_path.name} is missing next to it "
            f"(the PIQA release ships labels in a separate <name>-labels.lst file)"
        )
    labels = [ln.strip() for ln in labels_path.read_text().splitlines() if ln.strip()]
    if len(labels) != len(rows):
        raise PrepareError(
            f"{task}: {labels_path.name} has {len(labels)} labels for {len(rows)} records in {path.name}"
        )
    return "jsonl+labels", [_piqa_row(r, lab, task, path) for r, lab in zip(rows, labels)]


def _piqa_row(r: dict, label: Any, task: str, path: Path) -> dict:
    if str(label) not in ("0", "1"):
        raise PrepareError(f"{task}: {path}: label {label!r} is not 0 or 1")
    return {"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(label)}


def _hellaswag(task: str, src: Path) -> tuple[str, list[dict]]:
    """HellaSwag: the original jsonl (rowanz/hellaswag, same fields as the hub) or the llama.cpp
    text export: 6 lines per item (activity_label + ": " + ctx, gold index, 4 endings).

    The export joined ctx_a and ctx_b (and dropped the markup), so the split cannot be
    recovered: the whole context goes into ctx_a and ctx_b is empty. The stock task builds
    `activity_label: ctx_a + " " + ctx_b.capitalize()`; the prompt therefore differs from the
    hub's only where ctx_b started with a lower-case letter (its first letter stays lower case).
    """
    path = _single_file(task, src, ("*.jsonl", "*.txt"))
    if _looks_like_jsonl(path):
        rows = _read_jsonl(path, task)
        need = {"activity_label", "ctx_a", "ctx_b", "endings", "label"}
        if not need <= set(rows[0]):
            raise _unknown(task, path, rows[0], f"jsonl with {sorted(need)} or the llama.cpp text export")
        return "jsonl-original", [
            {**{k: r[k] for k in r if k in need | {"ind", "ctx", "source_id", "split", "split_type"}},
             "label": str(r["label"])}
            for r in rows
        ]
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) % 6 or not lines or not lines[1].strip().isdigit():
        raise PrepareError(
            f"{task}: {path}: unrecognised layout; expected the llama.cpp text export (6 lines per "
            f"item: context, gold index 0-3, 4 endings; {len(lines)} lines found) or the original jsonl"
        )
    out = []
    for i in range(0, len(lines), 6):
        ctx, gold, *endings = lines[i : i + 6]
        if gold.strip() not in ("0", "1", "2", "3"):
            raise PrepareError(f"{task}: {path}: line {i + 2}: gold index {gold!r} is not 0-3")
        label, sep, rest = ctx.partition(": ")
        if not sep:
            label, rest = "", ctx
        out.append({
            "ind": i // 6,
            "activity_label": label,
            "ctx_a": rest,
            "ctx_b": "",
            "ctx": rest,
            "endings": endings,
            "source_id": "",
            "split": "val",
            "split_type": "",
            "label": gold.strip(),
        })
    return "llama.cpp-text", out


def _winogrande(task: str, src: Path) -> tuple[str, list[dict]]:
    path = _single_file(task, src, ("*.jsonl",))
    rows = _read_jsonl(path, task)
    need = {"sentence", "option1", "option2", "answer"}
    if not need <= set(rows[0]):
        raise _unknown(task, path, rows[0], f"jsonl with {sorted(need)}")
    out = []
    for i, r in enumerate(rows):
        if str(r["answer"]) not in ("1", "2") or "_" not in r["sentence"]:
            raise PrepareError(
                f"{task}: {path}: record {i + 1}: answer must be 1/2 and the sentence must contain the blank '_'"
            )
        out.append({k: str(r[k]) for k in ("sentence", "option1", "option2", "answer")})
    layout = "jsonl" if set(rows[0]) <= need | {"qID"} else "jsonl+extra-fields"
    return layout, out


def _choices_from_ai2(choices: list[dict]) -> dict:
    return {"text": [c["text"] for c in choices], "label": [str(c["label"]) for c in choices]}


def _ai2_mc(task: str, src: Path, question_key: str) -> tuple[str, list[dict]]:
    """ARC / OpenBookQA jsonl: AI2 layout (question.stem, question.choices[{text, label}]) or
    the hub layout (question / question_stem string and choices {text, label})."""
    path = _single_file(task, src, ("*.jsonl",))
    rows = _read_jsonl(path, task)
    first = rows[0]
    q = first.get("question")
    if isinstance(q, dict) and {"stem", "choices"} <= set(q) and "answerKey" in first:
        out = [
            {"id": str(r.get("id", i)), question_key: r["question"]["stem"],
             "choices": _choices_from_ai2(r["question"]["choices"]), "answerKey": str(r["answerKey"]).strip()}
            for i, r in enumerate(rows)
        ]
        layout = "ai2-jsonl"
    elif isinstance(first.get(question_key), str) and isinstance(first.get("choices"), dict) and "answerKey" in first:
        out = [
            {"id": str(r.get("id", i)), question_key: r[question_key],
             "choices": {"text": list(r["choices"]["text"]), "label": [str(x) for x in r["choices"]["label"]]},
             "answerKey": str(r["answerKey"]).strip()}
            for i, r in enumerate(rows)
        ]
        layout = "hub-jsonl"
    else:
        raise _unknown(task, path, first, "AI2 jsonl {id, question: {stem, choices}, answerKey} or the hub layout")
    for i, r in enumerate(out):
        if r["answerKey"] not in r["choices"]["label"]:
            raise PrepareError(
                f"{task}: {path}: record {i + 1}: answerKey {r['answerKey']!r} is not one of the labels {r['choices']['label']}"
            )
    return layout, out


def _arc(task: str, src: Path) -> tuple[str, list[dict]]:
    return _ai2_mc(task, src, "question")


_OBQA_HEADER = ["ID", "Question Stem", "Choices", "Complete Question", "Answer Key"]


def _openbookqa(task: str, src: Path) -> tuple[str, list[dict]]:
    """OpenBookQA: the official TSV (Data/Main/*.tsv, choices in one '(A) .. (B) ..' string), the
    AI2 jsonl (Data/Main/*.jsonl) or the hub layout."""
    path = _single_file(task, src, ("*.tsv", "*.jsonl"))
    if _looks_like_jsonl(path):
        return _ai2_mc(task, path, "question_stem")
    with open(path, encoding="utf-8") as f:
        lines = [ln.rstrip("\n").rstrip("\r") for ln in f if ln.strip()]
    header = lines[0].split("\t") if lines else []
    if header[: len(_OBQA_HEADER)] != _OBQA_HEADER:
        raise PrepareError(
            f"{task}: {path}: unrecognised layout (header {header[:5]}); expected the OpenBookQA TSV "
            f"header {_OBQA_HEADER} or jsonl"
        )
    out = []
    for n, line in enumerate(lines[1:], 2):
        cells = line.split("\t")
        if cells == header:  # split files repeat the header
            continue
        if len(cells) < len(_OBQA_HEADER):
            raise PrepareError(f"{task}: {path}: line {n} has {len(cells)} columns, expected {len(_OBQA_HEADER)}")
        parts = re.split(r"(?:^|\s+)\(([A-Z])\)\s+", cells[2].strip())
        labels, texts = parts[1::2], [t.strip() for t in parts[2::2]]
        if parts[0].strip() or len(labels) < 2 or labels != [chr(ord("A") + i) for i in range(len(labels))]:
            raise PrepareError(f"{task}: {path}: line {n}: cannot parse choices {cells[2][:60]!r}")
        key = cells[4].strip()
        if key not in labels:
            raise PrepareError(f"{task}: {path}: line {n}: answer key {key!r} is not one of {labels}")
        out.append({"id": cells[0], "question_stem": cells[1], "choices": {"text": texts, "label": labels},
                    "answerKey": key})
    return "official-tsv", out


_BOOL = {"true": 1, "false": 0, "1": 1, "0": 0}


def _boolq(task: str, src: Path) -> tuple[str, list[dict]]:
    """BoolQ: SuperGLUE layout {question, passage, idx, label} with label 0/1, true/false or
    "true"/"false" (the OpenCompass copy), or the original release {question, passage, answer}."""
    path = _single_file(task, src, ("*.jsonl",))
    rows = _read_jsonl(path, task)
    first = rows[0]
    if {"question", "passage", "label"} <= set(first):
        key, layout = "label", "superglue-jsonl"
    elif {"question", "passage", "answer"} <= set(first):
        key, layout = "answer", "boolq-original-jsonl"
    else:
        raise _unknown(task, path, first, "jsonl {question, passage, label} or {question, passage, answer}")
    out = []
    for i, r in enumerate(rows):
        value = str(r[key]).strip().lower()
        if value not in _BOOL:
            raise PrepareError(f"{task}: {path}: record {i + 1}: {key} {r[key]!r} is not a boolean")
        out.append({"question": r["question"], "passage": r["passage"], "idx": int(r.get("idx", i)),
                    "label": _BOOL[value]})
    return layout, out


CONVERTERS: dict[str, Callable[[str, Path], tuple[str, list[dict]]]] = {
    "wikitext": _wikitext,
    "lambada_openai": _lambada,
    "piqa": _piqa,
    "hellaswag": _hellaswag,
    "winogrande": _winogrande,
    "arc_easy": _arc,
    "arc_challenge": _arc,
    "boolq": _boolq,
    "openbookqa": _openbookqa,
}


# --- entry point ---------------------------------------------------------------------------------


def source_files(task: str, src: str | Path) -> list[Path]:
    """The files a conversion of `src` reads (the rule's inputs; checksummed in prepared.json).
    A source that does not exist is returned as is, so that a workflow reports it missing."""
    src = Path(src)
    if src.is_file():
        labels = src.with_name(f"{src.stem}-labels.lst")
        return [src, labels] if task == "piqa" and labels.is_file() else [src]
    if src.is_dir():
        return sorted(p for p in src.iterdir() if p.is_file())
    return [src]


def prepare_eval_data(task: str, src: str | Path, dst: str | Path) -> dict:
    """Convert `src` (a file, or a directory holding it) for lm-eval task `task` into `dst`.

    Writes `dst/<split>.jsonl` and `dst/prepared.json` into a directory beside `dst`, then swaps
    it in crash-safely (`_swap_in`): on any error nothing is left at `dst` but what was there. An
    existing `dst` is replaced only if it is a prepared dir (has prepared.json) or empty. Returns
    the metadata written to prepared.json.
    """
    if task not in CONVERTERS:
        raise PrepareError(f"unknown task {task!r}; prepare-eval-data knows: {', '.join(CONVERTERS)}")
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise PrepareError(f"{task}: source {src} does not exist")
    if dst.exists() and (not dst.is_dir() or (any(dst.iterdir()) and not (dst / PREPARED_META).is_file())):
        raise PrepareError(f"{task}: destination {dst} exists and is not a prepared eval-data dir; refusing to overwrite it")
    try:
        layout, records = CONVERTERS[task](task, src)
    except UnicodeDecodeError:  # the readers' bare error names neither file nor line
        bad = next(filter(None, map(utf8_problem, source_files(task, src))), f"{src}: not UTF-8")
        raise PrepareError(f"{task}: {bad}") from None
    meta = {
        "task": task,
        "split": EVAL_SPLIT[task],
        "file": prepared_file(task, ".").name,
        "records": len(records),
        "layout": layout,
        "source": str(src.resolve()),
        "source_sha256": {p.name: sha256_file(p) for p in source_files(task, src)},
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        with open(tmp / meta["file"], "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        (tmp / PREPARED_META).write_text(json.dumps(meta, indent=2) + "\n")
        _swap_in(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _swap_in(tmp: Path, dst: Path) -> None:
    """Make the complete directory `tmp` (beside `dst`) `dst`, crash-safely: its files and the
    directory are fsync'ed first; an existing `dst` is renamed aside (to `tmp`'s name + ".old"),
    `tmp` renamed in, the parent fsync'ed, and only then the old one removed. A crash leaves the
    old `dst` or the new one in place, or (between the two renames) none and the old one aside
    as a hidden `.old` directory; never a partly written or partly removed `dst`. If the second
    rename fails, the old one is put back."""
    for f in tmp.iterdir():
        fsync_path(f)
    fsync_path(tmp)
    old = tmp.with_name(tmp.name + ".old") if dst.exists() else None
    if old is not None:
        os.rename(dst, old)
    try:
        os.rename(tmp, dst)
    except BaseException:
        if old is not None:
            os.rename(old, dst)
        raise
    fsync_path(dst.parent)
    if old is not None:
        shutil.rmtree(old)
