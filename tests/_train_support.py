"""Test doubles for the training tests, and a driver script for training subprocesses.

- TinyMixer: a cheap token mixer (causal prefix mean, gated) registered in place of a grid
  arch for the duration of a test, so trainer tests do not depend on the real mixers' speed.
  It has a bias, a per-channel `D` (excluded from weight decay) and an auxiliary loss, so the
  trainer's parameter groups and aux-loss logging are exercised.
- TinyTokens: a stand-in for hades.data.shards.TokenDataset with the same reading API
  (`vocab_size`, `global_batch_starts(seed, step, G, T)`, `windows(starts, T)`), a learnable
  repeating sequence, and an optional per-call delay that lets a test signal a run mid-way.
- As a script: `python tests/_train_support.py --config C --model M [--delay S]` runs the real
  trainer entry point (hades.train.cli.main) with both doubles installed; it works under
  `torchrun` too.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hades.config import Config, ModelConfig, load_config
from hades.models.mixers.base import Mixer, MixerOutput

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent

TEST_ARCH = "mamba2"  # the arch id the tiny mixer stands in for (restored after each test)
VOCAB = 61


class TinyMixer(Mixer):
    rescale_out_proj_init = True  # the LM inits it as the mamba2 it stands in for

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__(cfg, layer_idx)
        d = cfg.d_model
        self.in_proj = nn.Linear(d, 2 * d, bias=True)
        self.out_proj = nn.Linear(d, d, bias=False)
        self.D = nn.Parameter(torch.ones(d))

    def forward(self, u, return_state: bool = False) -> MixerOutput:
        x, g = self.in_proj(u).chunk(2, dim=-1)
        T = u.shape[1]
        csum = x.cumsum(1)
        n = torch.arange(1, T + 1, device=u.device, dtype=x.dtype).view(1, T, 1)
        y = csum / n * F.silu(g) + self.D * x
        state = {"sum": csum[:, -1], "n": torch.full((u.shape[0],), T, device=u.device)} if return_state else None
        return MixerOutput(self.out_proj(y), {"balance": g.float().pow(2).mean()}, state)

    def no_weight_decay(self) -> set[str]:
        return {"D"}


class TinyTokens:
    def __init__(self, vocab_size: int = VOCAB, n_tokens: int = 20_000, delay: float = 0.0):
        g = torch.Generator().manual_seed(0)
        period = torch.randint(0, vocab_size, (53,), generator=g)
        tokens = period.repeat(n_tokens // 53 + 1)[:n_tokens].clone()
        noise = torch.rand(n_tokens, generator=g) < 0.1
        tokens[noise] = torch.randint(0, vocab_size, (int(noise.sum()),), generator=g)
        self.tokens, self.vocab_size, self.delay = tokens, vocab_size, delay

    def global_batch_starts(self, seed: int, step: int, global_batch: int, seq_len: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        return torch.randint(0, len(self.tokens) - seq_len - 1, (global_batch,), generator=g)

    def windows(self, starts, seq_len: int) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        return torch.stack([self.tokens[s : s + seq_len + 1] for s in torch.as_tensor(starts).tolist()])

    def eval_windows(self, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
        n = min((len(self.tokens) - 1) // seq_len, max_windows or len(self.tokens))
        return self.windows([i * seq_len for i in range(n)], seq_len)


def config_dict(results_dir: str | Path, grid=("tiny",), **train: Any) -> dict:
    """A minimal valid pipeline config: tiny model and run, results under results_dir."""
    t = dict(
        steps=12, seq_len=16, global_batch=4, micro_batch=2, lr=3e-3, warmup_steps=2,
        checkpoint_every=4, keep_checkpoints=2, log_every=2, num_threads=1,
    )
    t.update(train)
    return {
        "name": "test",
        "seed": 7,
        "results_dir": str(results_dir),
        "tracking": {"uri": None, "experiment": "hades-test"},
        "data": {"source": "synthetic"},
        # unused (TinyTokens stands in for the tokens), but a valid config: the smallest byte-level BPE
        "tokenizer": {"kind": "train_bpe", "vocab_size": 258},
        "model": {"arch": TEST_ARCH, "d_model": 16, "n_layer": 2, "head_dim": 8, "d_state": 4, "chunk_size": 8},
        "train": t,
        "experiments": {g: {"label": g, "model": {}} for g in grid},
    }


def write_config(path: Path, raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw))
    Path(raw["results_dir"], "data", "tokens").mkdir(parents=True, exist_ok=True)
    Path(raw["results_dir"], "data", "tokens", "manifest.json").write_text('{"stand_in": true}\n')
    return path


def install(delay: float = 0.0, registry=None) -> None:
    """Point TEST_ARCH at TinyMixer and the trainer's data at TinyTokens (process-wide; tests
    use the pytest fixture instead, which undoes it)."""
    import hades.train.loop as loop
    from hades.models.mixers import REGISTRY

    (registry if registry is not None else REGISTRY)[TEST_ARCH] = f"{__name__}:TinyMixer"
    loop.open_dataset = lambda manifest, split: TinyTokens(delay=delay)


# -- test helpers (imported by the test modules) -------------------------------


_TEMPLATE: Path | None = None


def mlflow_template_db() -> Path:
    """An empty MLflow SQLite store, already migrated, created once per test process. Creating
    one runs every schema migration (seconds of CPU), so each test copies this file instead."""
    global _TEMPLATE
    if _TEMPLATE is None:
        from hades import tracking

        d = Path(tempfile.mkdtemp(prefix="hades-mlflow-template-"))
        atexit.register(shutil.rmtree, d, ignore_errors=True)
        tracking._client(f"sqlite:///{d / 'mlflow.db'}")
        _TEMPLATE = d / "mlflow.db"
    return _TEMPLATE


class TinyEnv:
    """Per-test workspace: configs with their own results dir (and MLflow store copy)."""

    def __init__(self, root: Path, template: Path):
        self.root, self.template = root, template

    def config(self, name: str, grid=("tiny",), **train: Any) -> tuple[Config, Path]:
        results = self.root / name / "results"
        results.mkdir(parents=True)
        if self.template is not None:
            shutil.copyfile(self.template, results / "mlflow.db")
        path = write_config(self.root / name / "config.yaml", config_dict(results, grid, **train))
        return load_config(path), path

    def spawn(self, cfg_path: Path, model: str = "tiny", delay: float = 0.0, nproc: int | None = None) -> subprocess.Popen:
        """The trainer entry point in a subprocess (under torchrun with nproc); output in
        <config dir>/<model>.out."""
        cmd = [sys.executable]
        if nproc:
            cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
        cmd += [str(TESTS_DIR / "_train_support.py"), "--delay", str(delay), "--config", str(cfg_path), "--model", model]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
        env.pop("PYTEST_CURRENT_TEST", None)
        out = open(cfg_path.parent / f"{model}.out", "w")
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    @staticmethod
    def output(cfg_path: Path, model: str = "tiny") -> str:
        return (cfg_path.parent / f"{model}.out").read_text()


class FakeRun:
    """Stands in for hades.tracking.TrainingRun where MLflow is not installed (the GPU machine):
    keeps what the trainer logs in memory."""

    def __init__(self):
        self.run_id, self.metrics, self.tags, self.status = "fake-run", [], {}, None

    @classmethod
    def open(cls, cfg, grid_id, **kwargs) -> FakeRun:
        run = cls()
        run.tags.update(kwargs.get("tags", {}))
        return run

    def log_metrics(self, records, deadline_s=None) -> None:
        self.metrics += list(records)

    def set_tags(self, tags) -> None:
        self.tags.update(tags)

    def log_artifact(self, path, artifact_path=None) -> None:
        pass

    def finish(self, status="FINISHED", message=None) -> None:
        self.status = status


@contextlib.contextmanager
def tiny_env(tmp_path: Path, monkeypatch, mlflow: bool = True):
    """TEST_ARCH -> TinyMixer and the trainer's data -> TinyTokens (through the test's
    monkeypatch, so undone after it), and the torch thread count restored (train() sets it).
    mlflow=False: tracking goes to FakeRun (for machines without MLflow)."""
    import hades.train.loop as loop
    from hades import tracking
    from hades.models.mixers import REGISTRY

    if not mlflow:
        monkeypatch.setattr(tracking, "TrainingRun", FakeRun)
    env = TinyEnv(tmp_path, mlflow_template_db() if mlflow else None)
    env.real_registry = dict(REGISTRY)
    monkeypatch.setitem(REGISTRY, TEST_ARCH, f"{__name__}:TinyMixer")
    monkeypatch.setattr(loop, "open_dataset", lambda manifest, split: TinyTokens())
    threads = torch.get_num_threads()
    try:
        yield env
    finally:
        torch.set_num_threads(threads)


def metrics_rows(cfg: Config, grid_id: str) -> list[dict]:
    path = Path(cfg.results_dir) / "train" / grid_id / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def final_weights(cfg: Config, grid_id: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(cfg.results_dir) / "checkpoints" / grid_id / "final" / "model.safetensors")


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys(), f"different tensors: {sorted(a.keys() ^ b.keys())}"
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"weights differ (not bitwise equal) in {diff}"


def mlflow_runs(cfg: Config, grid_id: str, all_stages: bool = True) -> list:
    """Runs of grid_id in the config's experiment (deleted ones too unless all_stages=False)."""
    from mlflow.entities import ViewType

    from hades import tracking

    client = tracking._client(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.tracking_experiment)
    return client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`hades.grid_id` = '{grid_id}'",
        run_view_type=ViewType.ALL if all_stages else ViewType.ACTIVE_ONLY,
    )


def metric_history(cfg: Config, run_id: str, key: str) -> list:
    from hades import tracking

    return sorted(tracking._client(cfg.tracking_uri).get_metric_history(run_id, key), key=lambda m: m.step)


def wait_for_step(cfg: Config, grid_id: str, step: int, proc: subprocess.Popen, timeout: float = 300) -> int:
    """Poll metrics.jsonl until it holds `step`; returns the last step seen."""
    path = Path(cfg.results_dir) / "train" / grid_id / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"training exited early with status {proc.returncode}"
        if path.exists():
            lines = [ln for ln in path.read_text().splitlines() if ln.endswith("}")]
            if lines and json.loads(lines[-1])["step"] >= step:
                return json.loads(lines[-1])["step"]
        time.sleep(0.005)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--delay", type=float, default=0.0)
    args, rest = p.parse_known_args()
    install(args.delay)
    from hades.train.cli import main as train_main

    load_config(rest[rest.index("--config") + 1])  # fail early on a bad config path
    return train_main(rest)


if __name__ == "__main__":
    sys.exit(main())
