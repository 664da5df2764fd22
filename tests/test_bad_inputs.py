"""Issue 8 item 6: each bad input, met as a user meets it, stops with one clear line naming the
offending key, file or value, and leaves no partial output behind.

Entry points: the `hades` CLI (malformed YAML, unknown key, unknown grid id), `snakemake -n`
(missing corpus file, passkey length beyond passkey.max_length: refused while the workflow
parses), and `evaluate_checkpoint`, the unit of work of rule `lm_eval`, which has no CLI
(tokenizer/vocabulary mismatch, offline task without local data). The library-level checks
behind them are tested next to their code; docs/reliability.md lists both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _workflow_support import snakemake_cmd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))


def _config(tmp_path: Path, name: str, edit=None) -> Path:
    """config/config.yaml with results_dir in tmp_path, edited by `edit(raw)`, as tmp_path/name."""
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["results_dir"] = str(tmp_path / "results")
    if edit:
        edit(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _fails_with_one_line(cmd: list[str], *expected: str, cwd: Path = REPO) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    text = (out.stdout + out.stderr).strip()
    assert out.returncode != 0, text
    last = text.splitlines()[-1]
    assert "Traceback" not in text and not last.lstrip().startswith("File "), text
    for e in expected:
        assert e in last, f"{e!r} not in the last line: {last}"
    return last


def _hades(*args: str) -> list[str]:
    return [sys.executable, "-m", "hades.cli", *args]


def _snakemake_n(configfile: Path) -> list[str]:
    # its own working directory next to the config file, not the checkout (_workflow_support)
    return snakemake_cmd(configfile.parent / "workdir", "-n", "--cores", "1", "--configfile", str(configfile))


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nseed: 1\nmodel:\n  d_model: 128\n   n_layer: 2\n")  # line 5 misindented
    _fails_with_one_line(_hades("train", "--config", str(bad), "--model", "mamba2"),
                         f"{bad}: line 5", "malformed YAML")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def _with_duplicate_seed(tmp_path: Path) -> tuple[Path, int]:
    """config/config.yaml with a second top-level `seed:` appended; (file, its line)."""
    text = (REPO / "config" / "config.yaml").read_text()
    lines = [f"results_dir: {tmp_path / 'results'}" if ln.startswith("results_dir:") else ln
             for ln in text.splitlines()] + ["seed: 7"]
    path = tmp_path / "dup.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, len(lines)


def test_duplicate_yaml_key_names_the_file_and_line(tmp_path):
    cfg, line = _with_duplicate_seed(tmp_path)
    _fails_with_one_line(_hades("train", "--config", str(cfg), "--model", "mamba2"),
                         f"{cfg}: line {line}, column 1", "duplicate key 'seed'")
    assert not (tmp_path / "results").exists()


def test_duplicate_yaml_key_stops_the_dry_run(tmp_path):
    """Snakemake parses --configfile itself (a duplicate silently keeps the last); the workflow
    re-reads the file with the config's loader."""
    cfg, line = _with_duplicate_seed(tmp_path)
    _fails_with_one_line(_snakemake_n(cfg), f"{cfg}: line {line}", "duplicate key 'seed'")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_results_dir_is_refused(tmp_path, value):
    cfg = _config(tmp_path, "c.yaml", lambda raw: raw.update(results_dir=value))
    _fails_with_one_line(_hades("train", "--config", str(cfg), "--model", "mamba2"),
                         str(cfg), "results_dir:", "is empty")


def test_tiny_bpe_vocabulary_is_refused(tmp_path):
    cfg = _config(tmp_path, "c.yaml", lambda raw: raw["tokenizer"].update(vocab_size=5))
    _fails_with_one_line(_hades("train", "--config", str(cfg), "--model", "mamba2"),
                         str(cfg), "tokenizer.vocab_size: 5 is too small", "at least 258")
    assert not (tmp_path / "results").exists()


def test_unknown_key_is_named(tmp_path):
    cfg = _config(tmp_path, "typo.yaml", lambda raw: raw["train"].update(chekpoint_every=5))
    _fails_with_one_line(_hades("train", "--config", str(cfg), "--model", "mamba2"),
                         str(cfg), "unknown key 'train.chekpoint_every'")
    assert not (tmp_path / "results").exists()


def test_unknown_model_id_is_named(tmp_path):
    cfg = _config(tmp_path, "c.yaml")
    _fails_with_one_line(_hades("train", "--config", str(cfg), "--model", "transformer"),
                         str(cfg), "unknown grid id 'transformer'", "mamba2")
    assert not (tmp_path / "results").exists()


def test_missing_corpus_file_stops_the_dry_run(tmp_path):
    missing = tmp_path / "corpus.txt"

    def edit(raw):
        raw["data"] = {"source": "text_files", "text_files": [str(missing)], "val_docs": 2, "num_shards": 1}

    cfg = _config(tmp_path, "c.yaml", edit)
    _fails_with_one_line(_snakemake_n(cfg), str(cfg), f"data.text_files: no such file: {missing}")
    assert not (tmp_path / "results").exists()


def test_passkey_length_beyond_max_length_stops_the_dry_run(tmp_path):
    cfg = _config(tmp_path, "c.yaml", lambda raw: raw["passkey"].update(lengths=[256, 1024], max_length=512))
    _fails_with_one_line(_snakemake_n(cfg), str(cfg), "passkey length 1024 exceeds passkey.max_length 512")
    assert not (tmp_path / "results").exists()


def test_misspelt_online_task_stops_the_dry_run(tmp_path):
    """An online task name lm-eval does not define failed only in rule lm_eval, after training."""
    cfg = _config(tmp_path, "c.yaml", lambda raw: raw["eval"].update(tasks=["toy_ppl", "arc_easyy"], offline=False))
    _fails_with_one_line(_snakemake_n(cfg), str(cfg), "eval.tasks: 'arc_easyy' is neither", "did you mean arc_easy")
    assert not (tmp_path / "results").exists()


# -- rule lm_eval's unit of work (no CLI): evaluate_checkpoint ---------------------------------


@pytest.fixture(scope="module")
def small_tok(tmp_path_factory):
    """A 40-token word-level tokenizer (eos <|endoftext|> = 0), saved as a tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<|padding|>": 1, **{f"w{i}": i + 2 for i in range(38)}}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|endoftext|>", pad_token="<|padding|>")


def _eval_refused(ckpt: Path, tasks, local_data, out: Path, *expected: str) -> None:
    from hades.eval.harness import evaluate_checkpoint
    from hades.eval.taskspec import EvalTaskError

    before = sorted(p.relative_to(ckpt.parent) for p in ckpt.parent.rglob("*"))
    with pytest.raises(EvalTaskError) as e:
        evaluate_checkpoint(ckpt, tasks, local_data, 2, 64, 2, out, offline=True)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for x in expected:
        assert x in msg, msg
    assert not out.parent.exists(), "no output (or its directory) is left behind"
    assert sorted(p.relative_to(ckpt.parent) for p in ckpt.parent.rglob("*")) == before


def test_tokenizer_vocabulary_mismatch_with_checkpoint(tmp_path, small_tok):
    from _eval_support import save_checkpoint, tiny_model

    ckpt = save_checkpoint(tiny_model(len(small_tok) + 8), small_tok, tmp_path, "m")  # trained on 48
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"text": "w1 w2 w3"}) + "\n")
    _eval_refused(ckpt, ["toy_ppl"], {"toy_ppl": str(val)}, tmp_path / "eval" / "m" / "lm_eval.json",
                  str(ckpt), "tokenizer has 40 tokens", "vocab_size 48")


def test_offline_task_without_local_data(tmp_path, small_tok):
    from _eval_support import save_checkpoint, tiny_model

    ckpt = save_checkpoint(tiny_model(len(small_tok)), small_tok, tmp_path, "m")
    _eval_refused(ckpt, ["piqa"], {}, tmp_path / "eval" / "m" / "lm_eval.json",
                  "'piqa' requested offline", "eval.local_data.piqa", "hades prepare-eval-data piqa")


# -- undecodable or malformed data files: the message names the file and the line --------------


def _not_utf8(path: Path, good_lines: list[str]) -> Path:
    """good_lines, then a Latin-1 line ("café" with é as the byte 0xe9), as path: line len(good_lines) + 1."""
    path.write_bytes(("\n".join(good_lines) + "\n").encode() + b"caf\xe9 au lait\n")
    return path


def test_non_utf8_corpus_file_names_the_file_and_line(tmp_path):
    from hades.data.corpus import build_corpus
    from hades.data.io import DataError

    text = _not_utf8(tmp_path / "corpus.txt", ["First paragraph.", "", "Second one."])
    data = {"source": "text_files", "text_files": [str(text)], "val_docs": 1, "num_shards": 1}
    with pytest.raises(DataError) as e:
        build_corpus(data, tmp_path / "corpus", seed=0)
    assert str(e.value).startswith(f"data.text_files: {text}: line 4, column 4: not UTF-8 (byte 0xe9)"), e.value
    assert not (tmp_path / "corpus").exists() or not any((tmp_path / "corpus").iterdir())


def test_malformed_or_non_utf8_jsonl_line_names_the_file_and_line(tmp_path):
    from hades.data.io import DataError, iter_jsonl

    bad = tmp_path / "val.jsonl"
    bad.write_text('{"text": "a"}\n\n{"text": "b"\n')
    with pytest.raises(DataError, match=rf"^{bad}: line 3: not JSON"):
        list(iter_jsonl(bad, "text"))
    bad.write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(DataError, match=rf"^{bad}: line 2: not a JSON object with a 'text' field"):
        list(iter_jsonl(bad, "text"))
    _not_utf8(bad, ['{"text": "a"}'] * 3000)  # past the first read buffer
    with pytest.raises(DataError, match=rf"^{bad}: line 3001, column 4: not UTF-8"):
        list(iter_jsonl(bad, "text"))


def test_prepare_eval_data_names_the_non_utf8_file_and_line(tmp_path):
    src = _not_utf8(tmp_path / "piqa.jsonl", [json.dumps({"goal": "g", "sol1": "a", "sol2": "b", "label": 0})])
    _fails_with_one_line(_hades("prepare-eval-data", "piqa", str(src), str(tmp_path / "out")),
                         f"piqa: {src}: line 2, column 4: not UTF-8")
    assert not (tmp_path / "out").exists()


def test_malformed_local_eval_data_line_names_the_file(tmp_path, small_tok):
    from _eval_support import save_checkpoint, tiny_model

    ckpt = save_checkpoint(tiny_model(len(small_tok)), small_tok, tmp_path, "m")
    cloze = tmp_path / "cloze.jsonl"
    cloze.write_text(json.dumps({"context": "w1 w2", "continuation": " w3"}) + "\n{not json}\n")
    _eval_refused(ckpt, ["toy_cloze"], {"toy_cloze": str(cloze)}, tmp_path / "eval" / "m" / "lm_eval.json",
                  "project task 'toy_cloze'", f"{cloze}: line 2: not JSON")
