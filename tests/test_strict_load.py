"""Issue 19 item 1: a checkpoint whose weights do not match its config.json is refused on every
load, naming the directory and the offending keys, instead of being evaluated into NaN
perplexities and chance accuracies (HF's from_pretrained only prints a "MISSING" report).

The checkpoints are written as the trainer exports them (tests/_eval_support.save_checkpoint:
save_pretrained of the model and the tokenizer into results/checkpoints/{model}/final/), then
damaged: one tensor deleted from model.safetensors, one extra, one reshaped, or n_layer bumped
in config.json. Loaders covered: hades.eval.harness.load_checkpoint (rules lm_eval, passkey),
hades.analysis.common.load_checkpoint (the analysis rules) and the trainer's resume
(hades.train.checkpoint.load_weights).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model

sys.path.insert(0, str(Path(__file__).parent))
from _eval_support import save_checkpoint, tiny_config  # noqa: E402

from hades.models import CheckpointMismatchError, build_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


@pytest.fixture(scope="module")
def small_tok():
    """A 40-token word-level tokenizer (eos <|endoftext|> = 0)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<|padding|>": 1, **{f"w{i}": i + 2 for i in range(38)}}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|endoftext|>", pad_token="<|padding|>")


def _export(tmp_path, tok, tie: bool = True):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_config(len(tok)), tie_embeddings=tie)).eval()
    return model, save_checkpoint(model, tok, tmp_path, "m")


def _edit_weights(ckpt: Path, edit) -> None:
    f = ckpt / "model.safetensors"
    tensors = load_file(f)
    edit(tensors)
    save_file(tensors, f, metadata={"format": "pt"})


def _loaders():
    from hades.analysis.common import load_checkpoint as analysis_load
    from hades.eval.harness import load_checkpoint as eval_load

    return {"eval": lambda p: eval_load(p, "cpu"), "analysis": analysis_load}


def _refused(ckpt: Path, *expected: str) -> None:
    for name, load in _loaders().items():
        with pytest.raises(CheckpointMismatchError) as e:
            load(ckpt)
        msg = str(e.value)
        assert "\n" not in msg, f"{name}: {msg}"
        for x in (f"checkpoint {ckpt}", "--forcerun train", *expected):
            assert x in msg, f"{name}: {x!r} not in {msg}"


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_intact_export_loads_with_identical_logits(tmp_path, small_tok, tie):
    model, ckpt = _export(tmp_path, small_tok, tie)
    ids = torch.randint(0, len(small_tok), (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(ids).logits
        for name, load in _loaders().items():
            loaded = load(ckpt)
            loaded = loaded[0] if isinstance(loaded, tuple) else loaded
            assert torch.equal(loaded(ids).logits, want), name


def test_missing_tensor_is_refused_naming_it(tmp_path, small_tok):
    _, ckpt = _export(tmp_path, small_tok)
    key = "layers.1.norm.weight"
    _edit_weights(ckpt, lambda t: t.pop(key))
    _refused(ckpt, f"missing {key}")


def test_config_with_one_more_layer_is_refused(tmp_path, small_tok):
    _, ckpt = _export(tmp_path, small_tok)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["n_layer"] += 1
    (ckpt / "config.json").write_text(json.dumps(cfg))
    _refused(ckpt, "missing layers.2.")


def test_unexpected_and_misshapen_tensors_are_refused(tmp_path, small_tok):
    _, ckpt = _export(tmp_path, small_tok)
    _edit_weights(ckpt, lambda t: t.update({"layers.9.norm.weight": torch.ones(32)}))
    _refused(ckpt, "unexpected layers.9.norm.weight")
    _, ckpt = _export(tmp_path, small_tok)
    _edit_weights(ckpt, lambda t: t.update({"norm_f.weight": torch.ones(16)}))
    _refused(ckpt, "shape mismatch norm_f.weight [16] (model: [32])")


def test_evaluation_of_a_damaged_export_writes_nothing(tmp_path, small_tok):
    from hades.eval.harness import evaluate_checkpoint

    _, ckpt = _export(tmp_path, small_tok)
    _edit_weights(ckpt, lambda t: t.pop("layers.0.norm.weight"))
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"text": "w1 w2 w3"}) + "\n")
    out = tmp_path / "eval" / "m" / "lm_eval.json"
    with pytest.raises(CheckpointMismatchError, match="missing layers.0.norm.weight"):
        evaluate_checkpoint(ckpt, ["toy_ppl"], {"toy_ppl": str(val)}, 2, 64, 2, out, offline=True)
    assert not out.parent.exists()


def test_resume_checkpoint_of_other_model_code_is_refused(tmp_path, small_tok):
    from hades.train.checkpoint import CheckpointError, LoadedCheckpoint, load_weights

    model, _ = _export(tmp_path, small_tok)
    step = tmp_path / "checkpoints" / "m" / "step_00000004"
    step.mkdir(parents=True)
    save_model(model, str(step / "model.safetensors"))
    ckpt = LoadedCheckpoint(path=step, step=4, trainer={}, optimizer={}, config={})
    fresh = build_model(model.cfg)
    load_weights(ckpt, fresh)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    _edit_weights(step, lambda t: t.pop("layers.1.norm.weight"))
    with pytest.raises(CheckpointError, match=rf"checkpoint {step}: .*missing layers.1.norm.weight.*step_\* aside"):
        load_weights(ckpt, fresh)
