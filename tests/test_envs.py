"""The per-stage conda envs (envs/*.yaml, `snakemake --sdm conda`) and their post-deploy scripts.

* the envs of the stages that run models on the GPU (train, eval) carry what the CUDA paths
  import: Triton (kernels/) and fla 0.6.0 (the attention baselines), pinned as envs/gpu.txt;
* a post-deploy script installs the repository wherever Snakemake runs it from: Snakemake runs a
  copy kept beside the env (.snakemake/conda), from the working directory that --directory sets,
  so the script must find the repository through HADES_REPO_ROOT, which the Snakefile exports.
No conda here: the scripts run with `pip` replaced by a shim that prints its arguments.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
STAGES = ("analysis", "data", "eval", "train")
GPU_STAGES = ("eval", "train")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def _pip_section(stage: str) -> list[str]:
    env = yaml.safe_load((ENVS / f"{stage}.yaml").read_text())
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    return pip


def _gpu_pins() -> dict[str, str]:
    lines = [ln.split("#")[0].strip() for ln in (ENVS / "gpu.txt").read_text().splitlines()]
    return {_name(ln): ln for ln in lines if ln and not ln.startswith("-")}


@pytest.mark.parametrize("stage", GPU_STAGES)
def test_gpu_stage_envs_have_triton_and_fla_pinned_as_gpu_txt(stage):
    pip = _pip_section(stage)
    by_name = {_name(r): r for r in pip if not r.startswith("-")}
    pins = _gpu_pins()
    assert {"torch", "triton", "flash-linear-attention"} <= pins.keys()
    for name, pin in pins.items():
        assert name in by_name, f"envs/{stage}.yaml lacks {name} (envs/gpu.txt: {pin})"
        assert by_name[name].split(";")[0].strip() == pin, f"envs/{stage}.yaml: {by_name[name]!r}, envs/gpu.txt: {pin!r}"
    assert by_name["flash-linear-attention"] == "flash-linear-attention==0.6.0"
    index = [ln.strip() for ln in (ENVS / "gpu.txt").read_text().splitlines() if ln.startswith("--extra-index-url")]
    assert index and all(i in pip for i in index), f"envs/{stage}.yaml lacks gpu.txt's {index}"


def _shim(tmp_path: Path) -> dict[str, str]:
    """An environment whose `pip` prints its arguments instead of installing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text('#!/bin/sh\necho "pip $*"\n')
    (bin_dir / "pip").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "HADES_REPO_ROOT"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


def _run(script: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def _installed(out: subprocess.CompletedProcess) -> Path:
    """The directory the script asked pip to install (editable, no dependencies)."""
    assert out.returncode == 0, out
    args = out.stdout.split()
    assert args[:4] == ["pip", "install", "--no-deps", "-e"] and len(args) == 5, out.stdout
    return Path(args[4]).resolve()


@pytest.mark.parametrize("stage", STAGES)
def test_post_deploy_installs_the_repository_from_any_directory(stage, tmp_path):
    script = ENVS / f"{stage}.post-deploy.sh"
    env = _shim(tmp_path)
    workdir = tmp_path / "workdir"  # `snakemake --directory workdir`
    (workdir / ".snakemake" / "conda").mkdir(parents=True)

    # as Snakemake runs it: a copy beside the env, from the working directory, the variable set
    copy = workdir / ".snakemake" / "conda" / "0123abcd_.post-deploy.sh"
    shutil.copyfile(script, copy)
    assert _installed(_run(copy, workdir, {**env, "HADES_REPO_ROOT": str(ROOT)})) == ROOT

    # by hand, in place, from elsewhere: the script's own directory leads to the repository
    assert _installed(_run(script, tmp_path, env)) == ROOT

    # a copy without the variable must refuse, not install whatever directory it guessed
    out = _run(copy, workdir, env)
    assert out.returncode != 0 and "pip" not in out.stdout and "HADES_REPO_ROOT" in out.stderr, out


def test_snakefile_exports_its_directory_for_the_post_deploy_scripts():
    text = (ROOT / "Snakefile").read_text()
    assert re.search(r"^os\.environ\.update\(HADES_REPO_ROOT=workflow\.basedir\)$", text, re.M), (
        "the Snakefile must export HADES_REPO_ROOT (envs/*.post-deploy.sh read it)")


@pytest.mark.parametrize("stage", STAGES)
def test_every_rule_names_the_env_of_its_stage(stage):
    """Each rule of workflow/rules/<stage>.smk says `conda: "../../envs/<stage>.yaml"` itself
    (relative to the rule file), so that reading a rule shows the environment it runs in."""
    text = (ROOT / "workflow" / "rules" / f"{stage}.smk").read_text()
    blocks = re.split(r"^(?=rule \w+:)", text, flags=re.M)[1:]
    assert blocks, f"no rules in {stage}.smk"
    for block in blocks:
        name = block.split(":", 1)[0].removeprefix("rule ")
        envs = re.findall(r'^    conda:\n        "([^"]+)"', block, re.M)
        assert envs == [f"../../envs/{stage}.yaml"], f"rule {name} ({stage}.smk): conda {envs}"
    assert (ROOT / "workflow" / "rules" / f"../../envs/{stage}.yaml").resolve().is_file()
