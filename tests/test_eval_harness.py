"""lm-eval through our adapter, offline: the real task definitions of the paper's nine tasks on
the real samples in ../shared/data, the project's toy tasks, wikitext perplexity against rolling
windows computed by hand, the per-model results JSON and its MLflow mirror, and the one-line
errors of tasks that cannot run."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest
import torch
from _eval_support import (
    SAMPLES,
    SHARED_DATA,
    available_arch,
    needs_shared,
    neox_tokenizer,
    offline_env,
    save_checkpoint,
    tiny_model,
    toy_cfg,
)

offline_env()

from hades.eval.harness import (  # noqa: E402  (after offline_env: datasets reads it at import)
    ACC_METRICS,
    AVG_KEY,
    PAPER_METRICS,
    evaluate_checkpoint,
    extract_metrics,
    run_lm_eval,
)
from hades.eval.prepare import PAPER_TASKS, prepare_eval_data  # noqa: E402
from hades.eval.taskspec import EvalTaskError, lm_eval_tasks_dir, render_tasks  # noqa: E402

# chance accuracy of each multiple-choice metric (2 choices: piqa, winogrande, boolq; 4: the rest)
CHANCE = {"piqa/acc": 0.5, "winogrande/acc": 0.5, "boolq/acc": 0.5, "hellaswag/acc_norm": 0.25,
          "arc_easy/acc": 0.25, "arc_challenge/acc_norm": 0.25, "openbookqa/acc_norm": 0.25}


@pytest.fixture(autouse=True, scope="module")
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    return neox_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(len(tok), seed=0)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no shared data at {SHARED_DATA}")
    root = tmp_path_factory.mktemp("eval_data")
    for task in PAPER_TASKS:
        prepare_eval_data(task, SHARED_DATA / SAMPLES[task], root / task)
    return {task: str(root / task) for task in PAPER_TASKS}


@needs_shared
def test_nine_paper_tasks_offline_on_real_samples(model, tok, prepared):
    # 10 docs of each task; wikitext's articles are long (~3K tokens), so its 3 shortest
    samples = {task: list(range(10)) for task in PAPER_TASKS} | {"wikitext": [2, 17, 49]}
    results, plan = run_lm_eval(model, tok, PAPER_TASKS, prepared, batch_size=16, max_length=256,
                                samples=samples, offline=True)
    metrics = extract_metrics(results)
    for task, metric, _ in PAPER_METRICS:
        assert f"{task}/{metric}" in metrics, (task, metric, sorted(metrics))
        assert results["n-samples"][task]["effective"] == len(samples[task])
        cfg = results["configs"][task]
        assert cfg["dataset_path"] == "json" and plan.sources[task]["prepared"]["task"] == task
    # the stock definitions ran (included, not copied): their prompts and metrics are there
    assert results["configs"]["piqa"]["doc_to_text"] == "Question: {{goal}}\nAnswer:"
    assert results["configs"]["arc_challenge"]["dataset_kwargs"]["data_files"]["test"].endswith("arc_challenge/test.jsonl")
    for key in ("wikitext/word_perplexity", "wikitext/byte_perplexity", "lambada_openai/perplexity"):
        assert math.isfinite(metrics[key]) and metrics[key] > 1.0, (key, metrics[key])
    # a random 2-layer model: perplexities far above any trained model, accuracies near chance
    assert metrics["wikitext/word_perplexity"] > 1e3 and metrics["lambada_openai/perplexity"] > 1e3
    for key in ACC_METRICS:
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["lambada_openai/acc"] <= 0.2
    mean_acc = sum(metrics[k] for k in CHANCE) / len(CHANCE)
    mean_chance = sum(CHANCE.values()) / len(CHANCE)
    assert abs(mean_acc - mean_chance) < 0.15, (mean_acc, mean_chance, {k: metrics[k] for k in CHANCE})
    assert metrics[AVG_KEY] == pytest.approx(sum(metrics[k] for k in ACC_METRICS) / 8)


def _stock_detokenizer():
    path = lm_eval_tasks_dir() / "wikitext" / "preprocess_wikitext.py"
    spec = importlib.util.spec_from_file_location("_stock_wikitext", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.wikitext_detokenizer


@torch.no_grad()
def _rolling_loglik(model, ids: list[int], prefix: int, window: int) -> float:
    """Sum of log p(t_j | t_<j) over a document, each token predicted once, in windows of
    `window` inputs: the first window starts from the prefix token, later windows use up to
    `window` tokens of context (written from the definition, not from lm-eval's code)."""
    seq = [prefix] + ids  # seq[j + 1] = ids[j], predicted from seq[: j + 1]
    total = 0.0
    for a in range(0, len(ids), window):
        b = min(a + window, len(ids))  # predict ids[a:b] = seq[a + 1 : b + 1]
        start = max(0, b - window)
        inp = torch.tensor([seq[start:b]])
        logp = torch.log_softmax(model(inp).logits[0].double(), dim=-1)
        for j in range(a, b):
            total += logp[j - start, seq[j + 1]].item()
    return total


def test_wikitext_word_perplexity_equals_rolling_windows_by_hand(model, tok, tmp_path):
    pages = [
        " \n = Alpha Centauri = \n \n Alpha Centauri is the closest star system to the Solar System , "
        "at a distance of 4 @.@ 37 light @-@ years . \n It is a triple star system . \n",
        " = The River = \n \n The river runs through the valley and the town ; its name is old . \n"
        " = = History = = \n The first bridge was built in 1820 , and rebuilt in 1901 . \n",
        " = Short = \n A short page . \n",
    ]
    if SHARED_DATA.is_dir():  # and a longer real one: several windows
        text = (SHARED_DATA / SAMPLES["wikitext"]).read_text().split("\n")
        pages.append("\n".join(text[:12]))
    data = tmp_path / "wikitext"
    data.mkdir()
    (data / "test.jsonl").write_text("".join(json.dumps({"page": p}) + "\n" for p in pages))
    window = 32
    results, _ = run_lm_eval(model, tok, ["wikitext"], {"wikitext": str(data)}, batch_size=3,
                             max_length=window, offline=True)
    ours = extract_metrics(results)["wikitext/word_perplexity"]

    detok = _stock_detokenizer()  # the task's target text is the stock detokenized page
    total_ll, total_words, lengths = 0.0, 0, []
    for page in pages:
        ids = tok.encode(detok({"page": page}))
        lengths.append(len(ids))
        total_ll += _rolling_loglik(model, ids, tok.eos_token_id, window)
        total_words += len(re.split(r"\s+", page))
    assert max(lengths) > 2 * window and min(lengths) < window, lengths  # one and several windows
    by_hand = math.exp(-total_ll / total_words)
    assert ours == pytest.approx(by_hand, rel=1e-4), (ours, by_hand)


def _write_toy_corpus(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    docs = ["the cat sat on the mat and the dog sat on the log", "a b c d e f g h i j k l m n o p",
            "one two three four five six seven eight nine ten"]
    (corpus / "val.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    cloze = [{"context": "the cat sat on the", "continuation": " mat", "kind": "recall"},
             {"context": "one two three four", "continuation": " five", "kind": "local"}]
    (corpus / "cloze.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cloze))


def test_toy_tasks_token_perplexity_and_cloze(model, tok, tmp_path):
    _write_toy_corpus(tmp_path)
    local = {"toy_ppl": str(tmp_path / "val.jsonl"), "toy_cloze": str(tmp_path / "cloze.jsonl")}
    results, plan = run_lm_eval(model, tok, ["toy_ppl", "toy_cloze"], local, batch_size=4, max_length=64,
                                offline=True)
    m = extract_metrics(results)
    for key in ("toy_ppl/word_perplexity", "toy_ppl/token_perplexity", "toy_ppl/byte_perplexity",
                "toy_cloze/acc", "toy_cloze/perplexity"):
        assert key in m and math.isfinite(m[key]), (key, m)
    assert AVG_KEY not in m, "no paper average without the paper's tasks"
    total_ll = total_tokens = 0
    for line in (tmp_path / "val.jsonl").read_text().splitlines():
        ids = tok.encode(json.loads(line)["text"])
        total_ll += _rolling_loglik(model, ids, tok.eos_token_id, 64)
        total_tokens += len(ids)
    assert m["toy_ppl/token_perplexity"] == pytest.approx(math.exp(-total_ll / total_tokens), rel=1e-4)
    assert plan.sources["toy_ppl"]["sha256"] and 0.0 <= m["toy_cloze/acc"] <= 1.0


def test_tasks_that_cannot_run_give_one_line_errors(tmp_path):
    def err(*args, **kw) -> str:
        with pytest.raises(EvalTaskError) as e:
            render_tasks(*args, **kw)
        msg = str(e.value)
        assert "\n" not in msg, msg
        return msg

    msg = err(["piqa"], {}, tmp_path, offline=True)
    assert "requested offline" in msg and "hades prepare-eval-data piqa" in msg
    assert "no offline definition" in err(["mmlu"], {}, tmp_path, offline=True)
    assert "has no validation.jsonl" in err(["boolq"], {"boolq": str(tmp_path)}, tmp_path, offline=True)
    assert "does not exist" in err(["toy_cloze"], {"toy_cloze": str(tmp_path / "nope.jsonl")}, tmp_path,
                                   offline=True)
    assert "no offline definition" in err(["mmlu"], {"mmlu": str(tmp_path)}, tmp_path, offline=False)
    plan = render_tasks(["piqa"], {}, tmp_path, offline=False)  # online: the stock task by name
    assert plan.names == ["piqa"] and plan.needs_stock_index and plan.include_dir is None


def test_stock_task_names_are_checked_cheaply(monkeypatch):
    """The paper's nine tasks (and a project task) are found by the line scan alone: parsing a
    valid config never pays for lm-eval's ~20 s TaskManager index. A misspelt one is refused
    with a suggestion, after the index confirms it is unknown; offline runs are not looked up."""
    import lm_eval.tasks

    from hades.eval.taskspec import check_stock_task_names

    def no_index(*a, **kw):
        raise AssertionError("TaskManager built for names the scan should find")

    with monkeypatch.context() as m:
        m.setattr(lm_eval.tasks, "TaskManager", no_index)
        check_stock_task_names([*PAPER_TASKS, "toy_ppl"], {}, offline=False)
        check_stock_task_names(["hellaswagg"], {}, offline=True)
    with pytest.raises(EvalTaskError, match=r"eval.tasks: 'hellaswagg' is neither .* did you mean hellaswag"):
        check_stock_task_names(["piqa", "hellaswagg"], {"piqa": "/prepared/piqa"}, offline=False)


def test_evaluate_checkpoint_record_and_mlflow(tok, tmp_path):
    from hades.models import build_model
    from hades.tracking import metric_key, model_run_id

    gid = available_arch()  # a grid id whose arch has a mixer implementation
    cfg = toy_cfg(tmp_path / "results")
    torch.manual_seed(0)
    model = build_model(cfg.experiment(gid).model, vocab_size=len(tok))
    ckpt = save_checkpoint(model, tok, Path(cfg.results_dir), gid)
    _write_toy_corpus(Path(cfg.results_dir) / "data" / "corpus")
    out = Path(cfg.results_dir) / "eval" / gid / "lm_eval.json"
    rec = evaluate_checkpoint(ckpt, ["toy_ppl", "toy_cloze"], None, 4, 128, None, out, cfg=cfg, grid_id=gid)

    saved = json.loads(out.read_text())
    assert saved["metrics"] == rec["metrics"] and saved["model"] == gid
    assert saved["settings"]["max_length"] == 128 and saved["settings"]["batch_size"] == 4
    assert saved["settings"]["offline"] is True, "config.yaml's eval.offline"
    assert saved["config"]["hash"] == cfg.hash() and saved["config"]["experiment"]["model"]["arch"] == gid
    assert len(saved["checkpoint"]["weights_sha256"]) == 64 and "config.json" in saved["checkpoint"]["records"]
    assert saved["data"]["toy_ppl"]["file"].endswith("data/corpus/val.jsonl")
    assert list(out.parent.iterdir()) == [out], "no temp files left beside the result"

    import mlflow

    client = mlflow.tracking.MlflowClient(cfg.tracking_uri)
    run = client.get_run(model_run_id(cfg, gid))
    for key, value in saved["metrics"].items():
        assert run.data.metrics[metric_key(f"eval/{key}")] == pytest.approx(value), key

    # a checkpoint whose architecture is not the experiment's is refused, naming the field
    other = next(g for g, e in cfg.experiments.items() if e.model.arch != gid)
    with pytest.raises(EvalTaskError, match="differs from the config: arch="):
        evaluate_checkpoint(ckpt, ["toy_ppl"], None, 4, 128, None, tmp_path / "x.json", cfg=cfg, grid_id=other)
    assert not (tmp_path / "x.json").exists()


def test_workflow_refuses_an_offline_task_without_data_when_parsing(tmp_path):
    """A paper run offline with a task that has no local data stops at `snakemake -n`, before
    any model trains, with the one-line reason."""
    import subprocess

    import yaml
    from _eval_support import REPO
    from _workflow_support import snakemake_cmd

    raw = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    raw["eval"].update(offline=True, local_data={"wikitext": str(tmp_path)}, sources={})
    cfg = tmp_path / "offline.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    # in a working directory of its own: the paper's relative results_dir is not the checkout's
    cmd = snakemake_cmd(tmp_path / "workdir", "-n", "--cores", "1", "--configfile", str(cfg))
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "lm-eval task 'lambada_openai' requested offline but eval.local_data.lambada_openai is not set" in (
        out.stdout + out.stderr), out.stdout + out.stderr
