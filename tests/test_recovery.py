"""Recovery as the README tells a user to do it (docs/reliability.md, section 12): after a
`kill -9` of the parent snakemake, and after a truncated token shard. Snakemake runs as a
subprocess from the repository root in a temporary working directory (_workflow_support), on a
tiny config: the default synthetic corpus, a one-layer model trained for a few seconds.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _workflow_support import REPO, snakemake_cmd

from hades.data.io import DataError
from hades.data.shards import TokenDataset

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
MODEL, STEPS = "mamba2", 200
TINY = {
    "train": {
        "steps": STEPS,
        "seq_len": 64,
        "global_batch": 2,
        "micro_batch": 2,
        "warmup_steps": 2,
        "checkpoint_every": 10,
        "log_every": 1,
    },
    "model": {"d_model": 64, "head_dim": 16, "n_layer": 1},
}


def _env() -> dict:
    env = {**os.environ, **OFFLINE_ENV}
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def _config_args(tmp_path: Path, steps: int = STEPS) -> list[str]:
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(json.dumps({**TINY, "train": {**TINY["train"], "steps": steps}}))  # JSON is YAML
    return ["--configfile", "config/config.yaml", str(tiny)]


def _readme_commands(pattern: str) -> list[list[str]]:
    """The snakemake command lines of the README line that matches `pattern`, split at `&&`."""
    lines = [line for line in (REPO / "README.md").read_text().splitlines() if re.search(pattern, line)]
    assert len(lines) == 1, (pattern, lines)
    code = lines[0].split("#")[0].strip()
    commands = [shlex.split(part) for part in code.split("&&")]
    assert all(c[0] == "snakemake" for c in commands), commands
    return commands


def _run(workdir: Path, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_cmd(workdir, *args), cwd=REPO, env=_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )  # fmt: skip


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-6000:]}"
    return proc.stdout


@pytest.mark.slow
def test_kill_9_of_snakemake_then_the_readme_recovery_line_resumes(tmp_path):
    """kill -9 of snakemake's process group (the trainer with it) after the first step
    checkpoint; the README's recovery commands finish the job, resuming from that checkpoint
    into the same MLflow run with every step once; the killed attempt's log survives."""
    workdir = tmp_path / "workdir"
    target = f"results/train/{MODEL}/summary.json"
    cfg = _config_args(tmp_path)
    # its own session and process group, as a terminal's job is: killpg reaches the trainer too
    first = subprocess.Popen(
        snakemake_cmd(workdir, "--cores", "1", target, *cfg), cwd=REPO, env=_env(),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    ckpt_root = workdir / "results" / "checkpoints" / MODEL
    deadline = time.monotonic() + 240
    try:
        while not list(ckpt_root.glob("step_*")):
            assert first.poll() is None, f"snakemake ended (exit {first.returncode}) before a checkpoint"
            assert time.monotonic() < deadline, "no step checkpoint within 240 s"
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    killed_at = max(int(p.name.removeprefix("step_")) for p in ckpt_root.glob("step_*"))
    assert killed_at < STEPS
    run_id = (ckpt_root / "mlflow_run_id").read_text().strip()
    assert list((workdir / ".snakemake" / "locks").iterdir()), "the killed snakemake left its lock"

    commands = _readme_commands(r"snakemake --unlock && ")
    assert [c[1] for c in commands] == ["--unlock", "--cores"], commands
    for command in commands:
        _ok(_run(workdir, [*command[1:], target, *cfg]))

    log = (workdir / "results" / "logs" / "train" / f"{MODEL}.log").read_text()
    resumed = re.search(r"resuming from \S*step_\d+ \(step (\d+)\)", log)
    assert resumed, log
    resumed_at = int(resumed.group(1))
    assert resumed_at >= killed_at, (resumed_at, killed_at)
    rows = [json.loads(x) for x in (workdir / "results" / "train" / MODEL / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert (ckpt_root / "mlflow_run_id").read_text().strip() == run_id
    assert json.loads((workdir / target).read_text())

    # Snakemake deleted the killed attempt's declared log before the rerun; the attempts log
    # keeps both attempts, the first one's checkpoint line included
    attempts = (workdir / "results" / "logs" / "train" / f"{MODEL}.attempts.log").read_text()
    assert attempts.count("attempt started") == 2, attempts
    first_attempt = attempts.split("attempt started")[1]
    assert "checkpoint" in first_attempt and "resuming" not in first_attempt, first_attempt
    assert "attempt started" in log and log.count("attempt started") == 1


def test_the_truncated_shard_error_names_the_command_that_repairs_it(tmp_path, monkeypatch):
    """A truncated shard: TokenDataset's one-line error advises a command; run as it says, it
    rebuilds that shard (bytes as before) and the manifest."""
    workdir = tmp_path / "workdir"
    _ok(_run(workdir, ["--cores", "1", "--until", "tokenize"]))
    tokens = workdir / "results" / "data" / "tokens"
    manifest = tokens / "manifest.json"
    shard = tokens / json.loads(manifest.read_text())["splits"]["train"]["shards"][1]["file"]
    good, good_manifest = shard.read_bytes(), manifest.read_text()
    shard.write_bytes(good[: len(good) // 2])

    monkeypatch.chdir(workdir)  # the trainer under Snakemake reads the manifest by this path
    with pytest.raises(DataError, match="truncated or stale shard") as e:
        TokenDataset("results/data/tokens/manifest.json")
    message = str(e.value)
    assert "\n" not in message and "--forcerun tokenize`" not in message
    command = shlex.split(re.search(r"`(snakemake [^`]+)`", message).group(1))
    assert command[0] == "snakemake" and "results/data/tokens/parts/train-1.json" in command, command

    _ok(_run(workdir, command[1:], timeout=120))
    assert shard.read_bytes() == good
    assert manifest.read_text() == good_manifest
    TokenDataset(manifest, verify="hash")


@pytest.mark.slow
def test_a_failed_training_attempts_traceback_survives_the_rerun(tmp_path):
    """Training fails on a truncated shard; after the repair the rerun's declared log is new
    (Snakemake deleted the old one), and the attempts log still holds the failure's traceback."""
    workdir = tmp_path / "workdir"
    target = f"results/train/{MODEL}/summary.json"
    cfg = _config_args(tmp_path, steps=20)
    _ok(_run(workdir, ["--cores", "1", "--until", "tokenize"]))
    tokens = workdir / "results" / "data" / "tokens"
    shard = tokens / json.loads((tokens / "manifest.json").read_text())["splits"]["train"]["shards"][1]["file"]
    shard.write_bytes(shard.read_bytes()[:100])
    failed = _run(workdir, ["--cores", "1", target, *cfg])
    assert failed.returncode != 0, failed.stdout[-3000:]

    logs = workdir / "results" / "logs" / "train"
    assert "truncated or stale shard" in (logs / f"{MODEL}.log").read_text()
    _ok(_run(workdir, ["--cores", "1", "--forcerun", "results/data/tokens/parts/train-1.json", "--until", "tokenize"]))
    _ok(_run(workdir, ["--cores", "1", target, *cfg]))
    log, attempts = (logs / f"{MODEL}.log").read_text(), (logs / f"{MODEL}.attempts.log").read_text()
    assert "Traceback" not in log and "truncated or stale shard" not in log, log
    failure, rerun = attempts.split("attempt started")[1:]
    assert "Traceback" in failure and "truncated or stale shard" in failure, attempts
    assert "done, 20 steps" in rerun and "Traceback" not in rerun, attempts
