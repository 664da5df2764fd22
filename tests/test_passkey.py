"""Passkey retrieval (docs/paper.md "Passkey retrieval"): prompts hit exact token lengths with the
key at the requested depth, scoring counts exact matches out of `trials`, batched recurrent decoding
gives the same answers as one prompt at a time, and lengths beyond passkey.max_length are
refused."""

from __future__ import annotations

import csv
import re

import pytest
import torch
from _eval_support import available_arch, neox_tokenizer, save_checkpoint, tiny_model, toy_cfg
from torch import nn

from hades.eval import passkey as pk
from hades.eval.passkey import (
    FILLER,
    QUESTION,
    TASK_DESCRIPTION,
    PasskeyError,
    PromptBuilder,
    build_prompts,
    greedy_decode,
    make_key,
    run_passkey,
)


@pytest.fixture(scope="module")
def tok():
    return neox_tokenizer()


@pytest.mark.parametrize("length", [200, 1000, 2048])
def test_prompt_exact_length_and_depth_placement(tok, length):
    b = PromptBuilder(tok)
    starts = []
    for depth in (0.0, 0.1, 0.5, 0.9, 1.0):
        key = make_key(0, length, depth, 0, 5)
        p = b.build(length, depth, key)
        ids = list(p.input_ids)
        assert len(ids) == length == p.length
        text = tok.decode(ids)
        assert text.startswith(TASK_DESCRIPTION + "\nThe grass is green.") or depth == 0.0
        assert text.endswith("\n" + QUESTION)
        line = tok.decode(ids[p.key_start : p.key_start + p.key_line_len])
        assert line == f"\nThe pass key is {key}. Remember it. {key} is the pass key.\n"
        assert text.count(key) == 2, "the key appears only in its line"
        n_filler = length - len(b.head) - p.key_line_len - len(b.question)
        assert p.key_start == len(b.head) + round(depth * n_filler)
        starts.append(p.key_start)
        if depth == 0.0:
            assert p.key_start == len(b.head), "depth 0: right after the task description"
        if depth == 1.0:
            assert p.key_start + p.key_line_len == length - len(b.question), "depth 1: right before the question"
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert FILLER.split(". ")[0] in tok.decode(list(b.filler(40)))


def test_keys_are_reproducible_digit_strings():
    keys = [make_key(7, 1024, 0.5, t, 5) for t in range(10)]
    assert all(re.fullmatch(r"[1-9]\d{4}", k) for k in keys)
    assert keys == [make_key(7, 1024, 0.5, t, 5) for t in range(10)] and len(set(keys)) > 5
    assert [make_key(8, 1024, 0.5, t, 5) for t in range(10)] != keys, "the seed changes the keys"
    assert all(len(make_key(0, 64, 0.0, t, 2)) == 2 for t in range(20))


def test_all_prompts_of_a_length_batch_without_padding(tok):
    prompts = build_prompts(tok, [256, 512], [0.0, 0.3, 1.0], 4, 5, seed=3)
    assert {len(p.input_ids) for p in prompts if p.length == 256} == {256}
    assert {len(p.input_ids) for p in prompts if p.length == 512} == {512}
    assert len(prompts) == 2 * 3 * 4


class Oracle(nn.Module):
    """Reads the key out of the prompt and answers it, unless the key line starts later than
    `horizon` (a fraction of the prompt): then it answers "0". Decodes like our LMs: prefill,
    then step (with a per-row queue of answer tokens as its "state")."""

    def __init__(self, tok, horizon: float):
        super().__init__()
        self.tok, self.horizon = tok, horizon
        self.anchor = nn.Parameter(torch.zeros(1))
        self.vocab = len(tok)

    def _one_hot(self, toks):
        out = torch.full((len(toks), self.vocab), -1e4)
        out[torch.arange(len(toks)), torch.tensor(toks)] = 0.0
        return out

    def prefill(self, ids):
        queues = []
        for row in ids.tolist():
            text = self.tok.decode(row)
            m = re.search(r"The pass key is (\d+)\.", text)
            key = m.group(1) if m.start() / len(text) <= self.horizon else "0"
            queues.append(self.tok.encode(" " + key) + [self.tok.eos_token_id] * 8)
        return self._one_hot([q[0] for q in queues]), [q[1:] for q in queues]

    def step(self, token, state):
        return self._one_hot([q[0] for q in state]), [q[1:] for q in state]


def test_scoring_counts_exact_matches_out_of_trials(tok):
    res = run_passkey(Oracle(tok, horizon=0.75), tok, [400, 800], [0.0, 0.5, 1.0], 3, 5, batch_size=4)
    scores = {(r["length"], r["depth"]): (r["score"], r["trials"]) for r in res["rows"]}
    for length in (400, 800):
        assert scores[(length, 0.0)] == (3, 3) and scores[(length, 0.5)] == (3, 3)
        assert scores[(length, 1.0)] == (0, 3), "the key beyond the oracle's horizon is missed"
    assert all(d["correct"] == (d["answer"] == d["key"]) for d in res["trials"])
    assert pk.summary_metrics(res["rows"])["accuracy"] == pytest.approx(12 / 18)


def test_batched_recurrent_decoding_equals_unbatched(tok):
    model = tiny_model(len(tok), seed=1)
    ids = torch.tensor([build_prompts(tok, [96], [0.5], 1, 5)[0].input_ids])
    logits, _ = model.prefill(ids)
    torch.testing.assert_close(logits, model(ids).logits[:, -1], rtol=1e-5, atol=1e-5)
    assert greedy_decode(model, ids, 3).tolist() == model.generate(ids, max_new_tokens=3)[:, 96:].tolist()

    kw = dict(lengths=[96, 160], depths=[0.0, 0.5, 1.0], trials=2, key_digits=5, seed=11)
    one = run_passkey(model, tok, batch_size=1, **kw)
    many = run_passkey(model, tok, batch_size=6, **kw)
    key = lambda d: (d["length"], d["depth"], d["trial"])  # noqa: E731
    assert [(key(d), d["answer_ids"]) for d in one["trials"]] == [(key(d), d["answer_ids"]) for d in many["trials"]]
    assert one["rows"] == many["rows"]


def test_lengths_beyond_max_length_are_refused(tok, tmp_path):
    with pytest.raises(PasskeyError, match=r"passkey length 4096 exceeds passkey.max_length 2048"):
        run_passkey(None, tok, [1024, 4096], [0.5], 1, 5, max_length=2048)
    with pytest.raises(PasskeyError, match="shorter than the prompt's fixed parts"):
        build_prompts(tok, [16], [0.5], 1, 5)
    cfg = toy_cfg(tmp_path, passkey={"lengths": [128, 1024], "max_length": 512})
    # refused from the config alone, before any checkpoint is read (this one does not exist)
    with pytest.raises(PasskeyError, match="1024 exceeds passkey.max_length 512"):
        pk.passkey_checkpoint(tmp_path / "nope", cfg, "mamba2", tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()


def test_passkey_checkpoint_writes_csv_json_and_logs(tok, tmp_path, monkeypatch):
    from hades.models import build_model

    gid = available_arch()
    cfg = toy_cfg(tmp_path, passkey={"lengths": [64, 96], "depths": [0.0, 1.0], "trials": 2, "key_digits": 2,
                                     "max_length": 128, "batch_size": 4, "models": [gid]})
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model(cfg.experiment(gid).model, vocab_size=len(tok)), tok, tmp_path, gid)
    logged = {}
    monkeypatch.setattr("hades.eval.harness.log_metrics_to_mlflow",
                        lambda cfg, gid, metrics, prefix, artifact=None: logged.update({prefix: (gid, metrics, artifact)}))
    out = tmp_path / "passkey" / gid / "passkey.csv"
    rec = pk.passkey_checkpoint(ckpt, cfg, gid, out)

    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["length", "depth", "score", "trials"] and len(rows) == 4
    assert {(int(r["length"]), float(r["depth"])) for r in rows} == {(64, 0.0), (64, 1.0), (96, 0.0), (96, 1.0)}
    assert all(int(r["trials"]) == 2 and 0 <= int(r["score"]) <= 2 for r in rows)
    assert pk.read_csv(out) == rec["rows"]
    saved = out.with_suffix(".json")
    assert saved.is_file() and len(rec["trials"]) == 8 and rec["config"]["hash"] == cfg.hash()
    assert logged["passkey"][0] == gid and "accuracy" in logged["passkey"][1] and logged["passkey"][2] == out

    # the analysis stage's Figure 3 reads this CSV as it is
    from hades.analysis.passkey_figure import plot, read_passkey

    grid = read_passkey(out)
    assert grid.lengths == [64, 96] and grid.depths == [0.0, 1.0] and grid.trials.sum() == 8
    plot({gid: grid, "other": grid}).savefig(tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_gpu_benchmark_script_runs_on_cpu(tmp_path):
    """benchmarks/passkey_gpu.py (timed on the H100 by the GPU engineer) through the same path,
    on CPU with the toy config and a two-cell grid."""
    import importlib.util

    from _eval_support import NEOX_TOKENIZER, REPO

    if not NEOX_TOKENIZER.is_file():
        pytest.skip(f"needs the GPT-NeoX tokenizer of ../shared/data ({NEOX_TOKENIZER})")
    spec = importlib.util.spec_from_file_location("passkey_gpu", REPO / "benchmarks" / "passkey_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "timing.json"
    report = bench.main(["--config", str(REPO / "config" / "config.yaml"), "--model", available_arch(),
                         "--tokenizer", str(NEOX_TOKENIZER), "--device", "cpu", "--dtype", "fp32",
                         "--lengths", "64", "--depths", "0,1", "--trials", "1", "--key-digits", "2",
                         "--no-warmup", "--out", str(out)])
    assert report["prompts"] == 2 and report["prompt_tokens"] == 128 and set(report["per_length_s"]) == {64}
    assert out.is_file() and report["grid_s"] > 0
