"""`hades prepare-eval-data`: every real benchmark sample converts into the schema its stock
lm-eval task reads; unknown layouts are refused with one clear line and leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _eval_support import SAMPLE_RECORDS, SAMPLES, SHARED_DATA, needs_shared

from hades.cli import main as cli
from hades.eval.prepare import (
    EVAL_SPLIT,
    PREPARED_META,
    PrepareError,
    prepare_eval_data,
    prepared_file,
)

# the fields each stock task reads (lm_eval/tasks/<task>/*.yaml and their utils)
READ_FIELDS = {
    "wikitext": {"page"},
    "lambada_openai": {"text"},
    "piqa": {"goal", "sol1", "sol2", "label"},
    "hellaswag": {"activity_label", "ctx_a", "ctx_b", "endings", "label"},
    "winogrande": {"sentence", "option1", "option2", "answer"},
    "arc_easy": {"question", "choices", "answerKey"},
    "arc_challenge": {"question", "choices", "answerKey"},
    "boolq": {"passage", "question", "label"},
    "openbookqa": {"question_stem", "choices", "answerKey"},
}


def _rows(task: str, dst: Path) -> list[dict]:
    return [json.loads(line) for line in prepared_file(task, dst).read_text().splitlines()]


@needs_shared
@pytest.mark.parametrize("task", list(SAMPLES))
def test_real_sample_converts(task, tmp_path):
    dst = tmp_path / task
    meta = prepare_eval_data(task, SHARED_DATA / SAMPLES[task], dst)
    rows = _rows(task, dst)
    assert meta["records"] == len(rows) == SAMPLE_RECORDS[task], (meta, len(rows))
    assert prepared_file(task, dst).name == f"{EVAL_SPLIT[task]}.jsonl"
    assert json.loads((dst / PREPARED_META).read_text())["source_sha256"], "the source checksum is recorded"
    for r in rows:
        assert READ_FIELDS[task] <= set(r), (task, sorted(r))
    first = rows[0]
    if task in ("arc_easy", "arc_challenge", "openbookqa"):
        for r in rows:  # the stock doc_to_target is choices.label.index(answerKey)
            assert r["answerKey"] in r["choices"]["label"] and len(r["choices"]["text"]) == len(r["choices"]["label"])
            assert set(r["choices"]) == {"text", "label"}, "GenMC's retrieved support text (para) is dropped"
    if task == "boolq":
        assert {r["label"] for r in rows} == {0, 1}
        assert first["label"] == 0  # SOURCES.md sample: record 1 is "false"
    if task == "piqa":
        labels = (SHARED_DATA / "piqa" / "dev-labels.lst").read_text().split()
        assert [r["label"] for r in rows] == [int(x) for x in labels]
    if task == "hellaswag":
        assert first["activity_label"] == "Roof shingle removal" and first["label"] == "3"
        assert first["ctx_a"] == "A man is sitting on a roof. he" and len(first["endings"]) == 4
    if task == "winogrande":
        assert set(first) == {"sentence", "option1", "option2", "answer"}, "extra metadata fields are dropped"
    if task == "openbookqa":
        assert first["id"] == "8-343" and first["answerKey"] == "B"
        assert first["choices"]["text"][1] == "quit eating lunch out"
    if task == "wikitext":
        assert first["page"].split("\n")[1] == " = Homarus gammarus = "
        assert all(" = = " not in r["page"].split("\n")[1] for r in rows), "articles split at top-level headings only"


@needs_shared
@pytest.mark.parametrize(
    "task, sample, needle",
    [
        ("piqa", "boolq/val.jsonl", "unrecognised layout"),
        ("boolq", "piqa/dev.jsonl", "unrecognised layout"),
        ("arc_easy", "winogrande/dev.jsonl", "unrecognised layout"),
        ("openbookqa", "wikitext/valid.txt", "unrecognised layout"),
        ("hellaswag", "wikitext/valid.txt", "unrecognised layout"),
        ("wikitext", "hellaswag/hellaswag_val_full.txt", "no ' = Title = ' article headings"),
        ("lambada_openai", "openbookqa/test.tsv", "not a jsonl file"),
        ("winogrande", "arc_easy/test.jsonl", "unrecognised layout"),
    ],
)
def test_wrong_layout_is_refused_with_one_line(task, sample, needle, tmp_path):
    dst = tmp_path / "out"
    with pytest.raises(PrepareError) as e:
        prepare_eval_data(task, SHARED_DATA / sample, dst)
    msg = str(e.value)
    assert needle in msg and task in msg and "\n" not in msg, msg
    assert not dst.exists() and list(tmp_path.iterdir()) == [], "nothing is left behind"


def test_unknown_layouts_and_bad_records(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"foo": 1}\n')
    with pytest.raises(PrepareError, match=r"unrecognised layout .*\['foo'\]"):
        prepare_eval_data("arc_challenge", bad, tmp_path / "o")
    bad.write_text("not json\n")
    with pytest.raises(PrepareError, match="line 1 is not JSON"):
        prepare_eval_data("boolq", bad, tmp_path / "o")
    bad.write_text('{"question": "q", "passage": "p", "label": "maybe"}\n')
    with pytest.raises(PrepareError, match="is not a boolean"):
        prepare_eval_data("boolq", bad, tmp_path / "o")
    bad.write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    with pytest.raises(PrepareError, match="x-labels.lst is missing"):
        prepare_eval_data("piqa", bad, tmp_path / "o")
    (tmp_path / "x-labels.lst").write_text("0\n1\n")
    with pytest.raises(PrepareError, match="2 labels for 1 records"):
        prepare_eval_data("piqa", bad, tmp_path / "o")
    tsv = tmp_path / "t.tsv"
    tsv.write_text("id\tquestion\tanswer\n1\tq\tA\n")
    with pytest.raises(PrepareError, match="expected the OpenBookQA TSV header"):
        prepare_eval_data("openbookqa", tsv, tmp_path / "o")
    with pytest.raises(PrepareError, match="unknown task 'mmlu'"):
        prepare_eval_data("mmlu", bad, tmp_path / "o")
    with pytest.raises(PrepareError, match="does not exist"):
        prepare_eval_data("boolq", tmp_path / "missing.jsonl", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_other_common_layouts(tmp_path):
    """The original releases next to the copies in shared/: BoolQ's {answer: bool}, the AI2
    OpenBookQA jsonl, the original HellaSwag jsonl, a labelled PIQA jsonl."""
    src = tmp_path / "boolq.jsonl"
    src.write_text(json.dumps({"question": "is it", "title": "t", "answer": True, "passage": "p"}) + "\n")
    prepare_eval_data("boolq", src, tmp_path / "b")
    assert _rows("boolq", tmp_path / "b") == [{"question": "is it", "passage": "p", "idx": 0, "label": 1}]

    src = tmp_path / "obqa.jsonl"
    src.write_text(json.dumps({"id": "7-980", "question": {"stem": "The sun is", "choices": [
        {"text": "hot", "label": "A"}, {"text": "cold", "label": "B"}]}, "answerKey": "A"}) + "\n")
    prepare_eval_data("openbookqa", src, tmp_path / "o")
    assert _rows("openbookqa", tmp_path / "o")[0] == {
        "id": "7-980", "question_stem": "The sun is", "choices": {"text": ["hot", "cold"], "label": ["A", "B"]},
        "answerKey": "A"}

    src = tmp_path / "hs.jsonl"
    src.write_text(json.dumps({"ind": 4, "activity_label": "Cooking", "ctx_a": "A man cooks.", "ctx_b": "he",
                               "ctx": "A man cooks. he", "endings": ["a", "b", "c", "d"], "label": 2,
                               "source_id": "x", "split": "val", "split_type": "indomain"}) + "\n")
    prepare_eval_data("hellaswag", src, tmp_path / "h")
    row = _rows("hellaswag", tmp_path / "h")[0]
    assert row["ctx_b"] == "he" and row["label"] == "2"

    src = tmp_path / "piqa.jsonl"
    src.write_text(json.dumps({"goal": "g", "sol1": "a", "sol2": "b", "label": 1}) + "\n")
    prepare_eval_data("piqa", src, tmp_path / "p")
    assert _rows("piqa", tmp_path / "p")[0]["label"] == 1


def test_destination_guard_and_replace(tmp_path):
    src = tmp_path / "l.jsonl"
    src.write_text('{"text": "a b c"}\n')
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "precious.txt").write_text("x")
    with pytest.raises(PrepareError, match="not a prepared eval-data dir"):
        prepare_eval_data("lambada_openai", src, keep)
    assert (keep / "precious.txt").exists()
    dst = tmp_path / "l"
    prepare_eval_data("lambada_openai", src, dst)
    src.write_text('{"text": "d e f"}\n{"text": "g h"}\n')
    assert prepare_eval_data("lambada_openai", src, dst)["records"] == 2, "a prepared dir is replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l", "l.jsonl", "mine"], "no temp dirs left"


def test_the_swap_syncs_the_new_dir_before_it_renames_and_the_old_one_goes_last(tmp_path, monkeypatch):
    """A replaced prepared dir: the new files and their dir are fsync'ed, the old dir is renamed
    aside (never removed before the new one is in), the new one renamed in, the parent synced,
    and only then the old one removed; the result is the new records and nothing hidden."""
    import hades.eval.prepare as prep

    src, dst = tmp_path / "l.jsonl", tmp_path / "out" / "l"
    src.write_text('{"text": "a b c"}\n')
    prepare_eval_data("lambada_openai", src, dst)
    events = []
    real_rename, real_fsync, real_rmtree = prep.os.rename, prep.fsync_path, prep.shutil.rmtree

    def rename(a, b):
        events.append(("rename", Path(a).name.endswith(".old"), Path(b) == dst))
        real_rename(a, b)

    def fsync(p):
        events.append(("fsync", Path(p).relative_to(tmp_path).parts[:2]))
        real_fsync(p)

    def rmtree(p, *args, **kwargs):
        events.append(("rmtree", Path(p).name.endswith(".old")))
        real_rmtree(p, *args, **kwargs)

    monkeypatch.setattr(prep.os, "rename", rename)
    monkeypatch.setattr(prep, "fsync_path", fsync)
    monkeypatch.setattr(prep.shutil, "rmtree", rmtree)
    src.write_text('{"text": "d e f"}\n{"text": "g h"}\n')
    assert prepare_eval_data("lambada_openai", src, dst)["records"] == 2
    tmp_name = next(e[1][1] for e in events if e[0] == "fsync" and len(e[1]) == 2)
    assert tmp_name.startswith(".l.")
    assert events == [
        ("fsync", ("out", tmp_name)),  # the records file,
        ("fsync", ("out", tmp_name)),  # prepared.json,
        ("fsync", ("out", tmp_name)),  # the new dir itself
        ("rename", False, False),  # the old dst aside
        ("rename", False, True),  # the new one in
        ("fsync", ("out",)),
        ("rmtree", True),
    ], events
    assert len(_rows("lambada_openai", dst)) == 2
    assert sorted(p.name for p in dst.parent.iterdir()) == ["l"], "nothing hidden left"


def test_a_failed_swap_puts_the_old_dir_back(tmp_path, monkeypatch):
    import hades.eval.prepare as prep

    src, dst = tmp_path / "l.jsonl", tmp_path / "out" / "l"
    src.write_text('{"text": "a b c"}\n')
    prepare_eval_data("lambada_openai", src, dst)
    before = {p.name: p.read_bytes() for p in dst.iterdir()}
    real_rename = prep.os.rename

    def rename(a, b):
        if Path(b) == dst and not Path(a).name.endswith(".old"):
            raise OSError("rename refused")
        real_rename(a, b)

    monkeypatch.setattr(prep.os, "rename", rename)
    src.write_text('{"text": "d e f"}\n')
    with pytest.raises(OSError, match="rename refused"):
        prepare_eval_data("lambada_openai", src, dst)
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before
    assert sorted(p.name for p in dst.parent.iterdir()) == ["l"], "no temp dir left"


def test_cli_one_line_error(tmp_path, capsys):
    src = tmp_path / "x.jsonl"
    src.write_text('{"foo": 1}\n')
    assert cli(["prepare-eval-data", "piqa", str(src), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: piqa:") and err.count("\n") == 1, err
    src.write_text('{"text": "one two"}\n')
    assert cli(["prepare-eval-data", "lambada_openai", str(src), str(tmp_path / "o")]) == 0
    assert "1 records" in capsys.readouterr().out
