"""How the tests run Snakemake on the repository's Snakefile (test_workflow, test_bad_inputs,
test_eval_harness).

`snakemake_cmd(workdir, ARGS)` runs from the repository root, as the README says, so relative
paths on the command line (`--configfile config/paper.yaml`, `--profile slurm`) are the
repository's and `python -m` imports this checkout's `hades`. But the working directory
(`--directory`) is `workdir`, a temporary one: the default `results_dir: results` and Snakemake's
own state (.snakemake/: metadata, locks, incomplete markers) live there, so a test neither sees
what a `snakemake --cores all` in the checkout left in results/ nor leaves anything there.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    """The command line of `snakemake ARGS` on REPO/Snakefile in `workdir`; run it with cwd=REPO.
    `workdir` is created here (Snakemake would, with an extra line in its output)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
        *args,
    ]  # fmt: skip
