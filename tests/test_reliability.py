"""Fault tests of training (docs/reliability.md): crash, corruption, preemption, divergence,
unsafe checkpoints, interrupted writes, stale checkpoints. CPU, tiny model, seconds each.

Each test compares against an uninterrupted run with the same seed: on CPU the trainer is
deterministic, so "resumed correctly" means bitwise-equal final weights and an identical
metric history (every step exactly once) in metrics.jsonl and in MLflow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from _train_support import (
    TinyTokens,
    assert_bitwise_equal,
    final_weights,
    metric_history,
    metrics_rows,
    mlflow_runs,
    tiny_env,
    wait_for_step,
)

import hades.train.loop as loop
from hades.train import EXIT_DIVERGED, EXIT_PREEMPTED, Preempted, train
from hades.train.checkpoint import (
    CHECKSUM_FILE,
    FILES,
    CheckpointError,
    latest_good,
    list_checkpoints,
    read_checkpoint,
    remove_tree,
    rng_state,
    save_checkpoint,
    step_dir_name,
    sweep_incomplete,
    verify,
)

STEPS = 16


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    with tiny_env(tmp_path, monkeypatch) as env:
        yield env


def _ckpt_root(cfg, grid_id="tiny") -> Path:
    return Path(cfg.results_dir) / "checkpoints" / grid_id


def _assert_same_history(cfg, ref, steps=STEPS):
    """metrics.jsonl and MLflow: steps 1..N exactly once, values equal to the reference."""
    rows, ref_rows = metrics_rows(cfg, "tiny"), metrics_rows(ref, "tiny")
    assert [r["step"] for r in rows] == list(range(1, steps + 1)), "metrics.jsonl: a step is missing or duplicated"
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows], "metrics.jsonl: loss curve differs from the uninterrupted run"
    runs = mlflow_runs(cfg, "tiny")
    assert len(runs) == 1, f"expected one MLflow run for the model, found {len(runs)}"
    assert runs[0].info.status == "FINISHED"
    hist = metric_history(cfg, runs[0].info.run_id, "train/loss")
    assert [m.step for m in hist] == list(range(1, steps + 1)), "MLflow: a step is missing or logged twice"
    assert [m.value for m in hist] == [r["loss"] for r in ref_rows]


class _SignalAt(TinyTokens):
    """Delivers SIGTERM to this process while reading the `at`-th micro-batch (in-process
    preemption: the handler sets the flag, the loop stops at the next step boundary)."""

    def __init__(self, at: int):
        super().__init__()
        self.calls, self.at = 0, at

    def windows(self, starts, seq_len):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().windows(starts, seq_len)


def _preempt_in_process(monkeypatch, cfg, at_call: int) -> Preempted:
    monkeypatch.setattr(loop, "open_dataset", lambda m, s: _SignalAt(at_call))
    with pytest.raises(Preempted) as e:
        train(cfg, "tiny")
    monkeypatch.setattr(loop, "open_dataset", lambda m, s: TinyTokens())
    return e.value


# -- 1. crash and resume -----------------------------------------------------------------------


def test_sigkill_at_random_step_then_rerun_resumes_bitwise(tiny):
    seed = int(os.environ.get("HADES_TEST_SEED", time.time_ns() % 10**6))
    kill_at = random.Random(seed).randint(2, STEPS - 4)
    cfg, path = tiny.config("crash", steps=STEPS)
    proc = tiny.spawn(path, delay=0.05)  # ~0.1 s per step, so the kill lands mid-run
    ref, _ = tiny.config("ref", steps=STEPS)
    train(ref, "tiny")  # the uninterrupted run, while the subprocess starts
    seen = wait_for_step(cfg, "tiny", kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    note = f"(HADES_TEST_SEED={seed}: killed at step {seen})"
    assert seen < STEPS, f"the run finished before the kill {note}"
    ckpts = [s for s, _ in list_checkpoints(_ckpt_root(cfg))]
    assert all(s % 4 == 0 and s < STEPS for s in ckpts), f"{ckpts} {note}"

    summary = train(cfg, "tiny")  # the rerun
    assert summary["resumed_from"] == ckpts[-1:], note
    assert_bitwise_equal(final_weights(cfg, "tiny"), final_weights(ref, "tiny"))
    _assert_same_history(cfg, ref)


# -- 1b. one trainer per model ---------------------------------------------------------------


def test_second_trainer_of_a_running_model_refuses_until_the_first_dies(tiny, caplog):
    """An orphaned trainer still running (its Snakemake died) and a rerun of the same model:
    the rerun refuses at once in one line naming the lock, the holder's PID and what to do,
    and touches nothing; once the holder is SIGKILLed the kernel has dropped its flock, and a
    new trainer takes it and resumes as after any crash."""
    from hades.train import EXIT_LOCKED, TrainerLocked
    from hades.train.cli import main as train_cli

    cfg, path = tiny.config("lock", steps=STEPS)
    lock_file = _ckpt_root(cfg) / loop.LOCK_FILE
    proc = tiny.spawn(path, delay=0.05)
    ref, _ = tiny.config("ref", steps=STEPS)
    train(ref, "tiny")
    wait_for_step(cfg, "tiny", 5, proc)

    t0 = time.monotonic()
    with pytest.raises(TrainerLocked) as e:
        train(cfg, "tiny")
    assert time.monotonic() - t0 < 5, "the refusal should come before any set-up"
    msg = str(e.value)
    assert "\n" not in msg and "model tiny" in msg and str(lock_file) in msg, msg
    assert f"PID {proc.pid} on host " in msg and f"kill PID {proc.pid}; then rerun" in msg, msg
    holder = json.loads(lock_file.read_text())
    assert holder["pid"] == proc.pid and holder["host"] and holder["started"]
    # the CLI (python -m hades.train, hades train, the rule's torchrun) maps it to its own status
    with caplog.at_level(logging.ERROR, logger="hades.train"):
        assert train_cli(["--config", str(path), "--model", "tiny"]) == EXIT_LOCKED
    assert msg in caplog.text

    seen = wait_for_step(cfg, "tiny", 9, proc)  # the refusals did not disturb the running trainer
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert seen < STEPS, "the run finished before the kill"
    ckpts = [s for s, _ in list_checkpoints(_ckpt_root(cfg))]

    summary = train(cfg, "tiny")  # the rerun after the kill: no stale lock to clear
    assert summary["resumed_from"] == ckpts[-1:]
    assert_bitwise_equal(final_weights(cfg, "tiny"), final_weights(ref, "tiny"))
    _assert_same_history(cfg, ref)
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    loop.TrainLock(lock_file).check("tiny")  # released when train() returned


def test_only_rank_0_takes_the_lock_and_every_rank_refuses_with_it(tiny, monkeypatch):
    """Under torchrun the main process holds the lock for the group; another rank never locks
    (its flock would collide with rank 0's) and stops when rank 0 reports the lock held."""
    import hades.train.distributed as D
    from hades.train import TrainerLocked

    cfg, _ = tiny.config("ranks", steps=STEPS)
    holder = loop.TrainLock(_ckpt_root(cfg) / loop.LOCK_FILE)
    holder.acquire("tiny")  # the running group's rank 0
    try:
        monkeypatch.setattr(D, "init_distributed", lambda device: (D.DistInfo(rank=1, world_size=2), torch.device("cpu")))
        monkeypatch.setattr(D, "broadcast_int", lambda info, value, device: 1)  # rank 0: refused
        monkeypatch.setattr(loop.fcntl, "flock", lambda *a: pytest.fail("a rank other than 0 took the lock"))
        with pytest.raises(TrainerLocked, match=f"PID {os.getpid()} on host"):
            train(cfg, "tiny")
    finally:
        holder.release()


@pytest.mark.parametrize("srun", [False, True], ids=["in-process", "own-slurm-step"])
def test_rule_script_exits_73_while_another_trainer_holds_the_lock(tiny, monkeypatch, capsys, tmp_path, srun):
    """workflow/scripts/train.py: the lock's refusal is exit status 73 with the one line on
    stderr; as a launcher (srun or torchrun) it refuses before starting the trainer."""
    import runpy
    from types import SimpleNamespace

    import yaml

    from hades.train import EXIT_LOCKED

    cfg, path = tiny.config("rule", steps=STEPS)
    holder = loop.TrainLock(_ckpt_root(cfg) / loop.LOCK_FILE)
    holder.acquire("tiny")
    started = tmp_path / "srun-started"
    if srun:
        shim = tmp_path / "bin"
        shim.mkdir()
        (shim / "srun").write_text(f"#!/bin/sh\ntouch {started}\n")
        (shim / "srun").chmod(0o755)
        monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("SLURM_JOB_ID", "1")
        monkeypatch.delenv("HADES_TRAIN_SRUN", raising=False)
    sm = SimpleNamespace(log=[str(tmp_path / "train.log")], wildcards=SimpleNamespace(model="tiny"),
                         config=yaml.safe_load(path.read_text()), resources={})
    try:
        with pytest.raises(SystemExit) as e:
            runpy.run_path(str(Path(loop.__file__).parents[2] / "workflow" / "scripts" / "train.py"),
                           init_globals={"snakemake": sm}, run_name="__main__")
    finally:
        holder.release()
    assert e.value.code == EXIT_LOCKED
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: train tiny: model tiny: another trainer is running") and f"PID {os.getpid()}" in err[-1]
    assert not started.exists(), "srun was started although the lock was held"


def test_rule_script_and_cli_exit_2_on_a_config_error(tiny, monkeypatch, capsys, tmp_path):
    """One exit-status mapping (hades.train.launch): a grid id the config does not have is status 2
    from the rule's script (with the one line on stderr) and from `python -m hades.train`."""
    import runpy
    from types import SimpleNamespace

    import yaml

    from hades.train.cli import main as train_cli

    _, path = tiny.config("cfgerr", steps=STEPS)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    sm = SimpleNamespace(log=[str(tmp_path / "train.log")], wildcards=SimpleNamespace(model="nope"),
                         config=yaml.safe_load(path.read_text()), resources={})
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(Path(loop.__file__).parents[2] / "workflow" / "scripts" / "train.py"),
                       init_globals={"snakemake": sm}, run_name="__main__")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: train nope: ") and "unknown grid id 'nope'" in err[-1], err
    assert train_cli(["--config", str(path), "--model", "nope"]) == 2


# -- 2. checkpoint integrity -------------------------------------------------------------------


def _truncate(p: Path):
    f = p / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _bitflip(p: Path):
    f = p / "optimizer.pt"
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0x01
    f.write_bytes(bytes(b))


def _no_sums(p: Path):
    (p / CHECKSUM_FILE).unlink()


@pytest.mark.parametrize("damage", [_truncate, _bitflip, _no_sums], ids=["truncated", "bitflip", "no-checksums"])
def test_corrupt_latest_checkpoint_is_reported_and_previous_used(tiny, monkeypatch, caplog, damage):
    cfg, _ = tiny.config("corrupt", steps=STEPS)
    stop = _preempt_in_process(monkeypatch, cfg, at_call=17)  # during step 9 (2 micro-batches per step)
    assert stop.step == 9
    root = _ckpt_root(cfg)
    assert [s for s, _ in list_checkpoints(root)] == [8, 9], "keep_checkpoints=2 keeps the newest two"
    damage(root / step_dir_name(9))
    with pytest.raises(CheckpointError):
        verify(root / step_dir_name(9))

    with caplog.at_level(logging.WARNING):
        summary = train(cfg, "tiny")
    assert f"{step_dir_name(9)} is unusable" in caplog.text
    assert summary["resumed_from"] == [8], "fell back to the previous checkpoint"
    assert [p.name.split(".")[0] for p in (root / "corrupt").iterdir()] == [step_dir_name(9)], "kept for inspection"
    ref, _ = tiny.config("ref", steps=STEPS)
    train(ref, "tiny")
    assert_bitwise_equal(final_weights(cfg, "tiny"), final_weights(ref, "tiny"))
    _assert_same_history(cfg, ref)


def _tiny_checkpoint(root: Path, step: int) -> Path:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    return save_checkpoint(
        root, step, model=model, optimizer=opt,
        trainer_state={"scheduler": {}, "rng": [rng_state()], "tokens": 0, "train_time_s": 0.0, "resumes": []},
        config={"resume_key": "k"}, metrics_file=None, keep=5,
    )


class _Evil:
    """Unpickling this would run open(marker, 'w'): the marker proves whether code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_with_pickled_object_is_refused(tmp_path, caplog):
    root = tmp_path / "ckpts"
    _tiny_checkpoint(root, 1)
    bad = _tiny_checkpoint(root, 2)
    marker = tmp_path / "code_ran"
    torch.save({"format_version": 1, "step": 2, "payload": _Evil(marker)}, bad / "trainer.pt")
    from hades.io import sha256_file

    # valid checksums: only the loader's refusal to unpickle objects can stop this file
    (bad / CHECKSUM_FILE).write_text("".join(f"{sha256_file(bad / f)}  {f}\n" for f in FILES))
    verify(bad)
    with pytest.raises(CheckpointError, match="pickled Python object, refusing to load"):
        read_checkpoint(bad)
    assert not marker.exists(), "the pickled payload must never execute"
    with caplog.at_level(logging.WARNING):
        good = latest_good(root)
    assert good is not None and good.step == 1 and "refusing to load" in caplog.text
    assert not marker.exists()


def test_interrupted_checkpoint_write_leaves_previous_intact(tmp_path, monkeypatch):
    root = tmp_path / "ckpts"
    _tiny_checkpoint(root, 1)
    import hades.train.checkpoint as ck

    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        if str(f).endswith("trainer.pt"):
            raise OSError("No space left on device")

    monkeypatch.setattr(ck.torch, "save", dying_save)
    with pytest.raises(OSError, match="No space"):
        _tiny_checkpoint(root, 2)
    monkeypatch.setattr(ck.torch, "save", real_save)
    assert [s for s, _ in list_checkpoints(root)] == [1]
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")], "a failed write cleans up"
    # a write killed by SIGKILL leaves a hidden temp dir: never listed, swept on the next start
    (root / ".tmp-step_00000002-999-deadbeef").mkdir()
    (root / ".tmp-step_00000002-999-deadbeef" / "model.safetensors").write_bytes(b"partial")
    assert [s for s, _ in list_checkpoints(root)] == [1]
    assert latest_good(root).step == 1
    sweep_incomplete(root)
    assert sorted(p.name for p in root.iterdir()) == [step_dir_name(1)]


@pytest.mark.parametrize("die_at", ["between_renames", "after_renames"])
def test_resaving_a_step_loses_it_at_no_crash_point(tmp_path, monkeypatch, die_at):
    """A step saved again (after a resume) replaces its directory in two renames (old aside,
    new in): a process killed between them, or before the old copy is deleted, leaves a root from
    which the next start's sweep restores that step, the new copy where it is complete."""
    import hades.train.checkpoint as ck

    root = tmp_path / "ckpts"
    _tiny_checkpoint(root, 3)
    old_weights = (root / step_dir_name(3) / "model.safetensors").read_bytes()
    real_rename, real_rmtree = os.rename, ck.shutil.rmtree
    calls = []

    def dying_rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if die_at == "between_renames" and len(calls) == 2:
            raise KeyboardInterrupt("killed")  # not an OSError: nothing may clean up after it
        real_rename(src, dst)

    def dying_rmtree(path, *a, **k):
        if Path(path).name.startswith(".old-"):
            raise KeyboardInterrupt("killed")
        real_rmtree(path, *a, **k)

    monkeypatch.setattr(ck.os, "rename", dying_rename)
    if die_at == "after_renames":
        monkeypatch.setattr(ck.shutil, "rmtree", dying_rmtree)
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        _tiny_checkpoint(root, 3)
    monkeypatch.undo()
    assert calls[0][0] == step_dir_name(3) and calls[0][1].startswith(".old-"), calls
    if die_at == "between_renames":
        assert not (root / step_dir_name(3)).exists(), "the crash window this test is about"
        # save_checkpoint's cleanup removed the new copy (an exception, not a SIGKILL): the old one
        # must come back; with a SIGKILL the new copy stays too and is preferred (next case)
    sweep_incomplete(root)
    assert [s for s, _ in list_checkpoints(root)] == [3]
    assert sorted(p.name for p in root.iterdir()) == [step_dir_name(3)], "no hidden copies left"
    verify(root / step_dir_name(3))
    restored = (root / step_dir_name(3) / "model.safetensors").read_bytes()
    assert (restored == old_weights) == (die_at == "between_renames"), "after the renames the new copy is in place"


def test_sweep_prefers_the_complete_new_copy_of_a_step_being_replaced(tmp_path):
    """SIGKILL between the two renames: `.old-step_N-*` and a complete `.tmp-step_N-*`, no
    `step_N`. The sweep restores the new copy; an incomplete new copy loses to the old one."""
    root = tmp_path / "ckpts"
    for complete in (True, False):
        _tiny_checkpoint(root, 4)
        os.rename(root / step_dir_name(4), root / ".old-step_00000004-0001")
        torch.manual_seed(2)
        new = _tiny_checkpoint(root, 4)
        new_weights = (new / "model.safetensors").read_bytes()
        os.rename(new, root / ".tmp-step_00000004-77-cafe")
        if not complete:
            (root / ".tmp-step_00000004-77-cafe" / CHECKSUM_FILE).unlink()
        sweep_incomplete(root)
        assert sorted(p.name for p in root.iterdir()) == [step_dir_name(4)]
        verify(root / step_dir_name(4))
        got = (root / step_dir_name(4) / "model.safetensors").read_bytes()
        assert (got == new_weights) == complete
        remove_tree(root / step_dir_name(4))


# -- 3. preemption -----------------------------------------------------------------------------


def test_sigterm_saves_checkpoint_and_exits_for_requeue(tiny):
    cfg, path = tiny.config("term", steps=STEPS)
    proc = tiny.spawn(path, delay=0.05)
    ref, _ = tiny.config("ref", steps=STEPS)
    train(ref, "tiny")
    wait_for_step(cfg, "tiny", 5, proc)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
    out = tiny.output(path)
    assert rc == EXIT_PREEMPTED, out
    marker = json.loads((_ckpt_root(cfg) / loop.PREEMPTED_MARKER).read_text())
    step = marker["step"]
    assert 5 <= step < STEPS and marker["signal"] == "SIGTERM"
    verify(_ckpt_root(cfg) / step_dir_name(step))
    assert f"stopped by SIGTERM after step {step}" in out and f"exit {EXIT_PREEMPTED}" in out
    (run,) = mlflow_runs(cfg, "tiny")
    assert run.info.status == "KILLED"

    summary = train(cfg, "tiny")  # the requeued job
    assert summary["resumed_from"] == [step]
    assert not (_ckpt_root(cfg) / loop.PREEMPTED_MARKER).exists()
    assert_bitwise_equal(final_weights(cfg, "tiny"), final_weights(ref, "tiny"))
    _assert_same_history(cfg, ref)


# -- 4. divergence -----------------------------------------------------------------------------


def test_nan_loss_stops_naming_the_step_and_fails_the_run(tiny, monkeypatch, caplog):
    from hades.train import cli

    cfg, path = tiny.config("nan", steps=12)
    real_build = loop.build_model

    def build_poisoned(*a, **k):
        model = real_build(*a, **k)
        calls = [0]

        def poison(module, args, out):  # NaN logits from the first micro-batch of step 7
            calls[0] += 1
            if calls[0] > 2 * 6:
                out.logits = out.logits * float("nan")
            return out

        model.register_forward_hook(poison)
        return model

    monkeypatch.setattr(loop, "build_model", build_poisoned)
    with caplog.at_level(logging.ERROR):
        rc = cli.run(argparse.Namespace(config=str(path), model="tiny", rule="train"))
    assert rc == EXIT_DIVERGED
    assert "training diverged at step 7: loss = nan" in caplog.text
    assert "step_00000004 is kept" in caplog.text
    (run,) = mlflow_runs(cfg, "tiny")
    assert run.info.status == "FAILED"
    assert "step 7" in run.data.tags["hades.status_message"]
    root = _ckpt_root(cfg)
    assert [s for s, _ in list_checkpoints(root)] == [4]
    ck = read_checkpoint(root / step_dir_name(4))
    assert all(torch.isfinite(v).all() for v in ck.optimizer["state"][0].values())
    assert [r["step"] for r in metrics_rows(cfg, "tiny")] == list(range(1, 7))
    assert not (Path(cfg.results_dir) / "checkpoints" / "tiny" / "final").exists()
    assert not (Path(cfg.results_dir) / "train" / "tiny" / "summary.json").exists()


# -- 5. checkpoints of another config ----------------------------------------------------------


def test_checkpoints_of_a_changed_config_are_set_aside(tiny, monkeypatch, caplog):
    import yaml

    from hades.config import load_config

    cfg, path = tiny.config("stale", steps=STEPS)
    _preempt_in_process(monkeypatch, cfg, at_call=11)
    (old_run,) = mlflow_runs(cfg, "tiny")
    raw = yaml.safe_load(path.read_text())
    raw["train"]["lr"] = 1e-3
    cfg2 = load_config(raw)
    with caplog.at_level(logging.WARNING):
        summary = train(cfg2, "tiny")
    assert summary["resumed_from"] == [], "a changed recipe trains from scratch"
    assert "written for another config" in caplog.text
    stale = list((_ckpt_root(cfg) / "stale").iterdir())
    assert len(stale) == 1 and sorted(p.name for p in stale[0].iterdir()) == [step_dir_name(4), step_dir_name(6)]
    runs = {r.info.run_id: r for r in mlflow_runs(cfg, "tiny")}
    assert runs[old_run.info.run_id].info.lifecycle_stage == "deleted"
    assert runs[old_run.info.run_id].data.tags["hades.superseded_by"] == summary["mlflow_run_id"]
    assert [r.info.run_id for r in mlflow_runs(cfg, "tiny", all_stages=False)] == [summary["mlflow_run_id"]]


# -- 6. tracking outage --------------------------------------------------------------------------


def test_mlflow_outage_loses_no_metric(tiny, monkeypatch, caplog):
    """The store is unreachable from step 5 until the job is preempted after step 9: training
    goes on (errors reported), and the rerun back-fills MLflow from the checkpoint's records."""
    from hades import tracking

    real_log = tracking.TrainingRun.log_metrics

    def flaky(self, records, **kw):
        records = list(records)
        if any(step >= 5 for step, _ in records):
            raise ConnectionError("tracking server unreachable")
        return real_log(self, records, **kw)

    cfg, _ = tiny.config("outage", steps=STEPS)
    monkeypatch.setattr(tracking.TrainingRun, "log_metrics", flaky)
    with caplog.at_level(logging.ERROR):
        _preempt_in_process(monkeypatch, cfg, at_call=17)
    assert "MLflow logging failed" in caplog.text
    (run,) = mlflow_runs(cfg, "tiny")
    assert max(m.step for m in metric_history(cfg, run.info.run_id, "train/loss")) < 5
    monkeypatch.setattr(tracking.TrainingRun, "log_metrics", real_log)
    train(cfg, "tiny")
    ref, _ = tiny.config("ref", steps=STEPS)
    train(ref, "tiny")
    _assert_same_history(cfg, ref)

