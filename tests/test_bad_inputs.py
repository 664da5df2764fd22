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
