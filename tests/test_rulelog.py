"""hades.rulelog: a rule script's log (workflow/scripts/*.py). Each case runs in a fresh Python,
as Snakemake runs a script: logging.basicConfig configures nothing where the root logger already
has handlers (pytest's), so in-process it would not write the file at all. A stand-in with
`.log = [path]` plays Snakemake's injected `snakemake` object."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")

# what every script wrote inline before hades.rulelog (the reference for the log's format)
INLINE = """
logging.basicConfig(
    filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
try:
    logging.info("working on %s", "x")
    1 / 0
except Exception:
    logging.exception("rule demo failed")
    raise
"""


def run_script(
    tmp_path: Path, body: str, name: str = "rule.log"
) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / name
    code = (
        "import logging, sys, types\n"
        "from hades.rulelog import one_line_errors, rule_log\n"
        f"sm = types.SimpleNamespace(log=[{str(log)!r}])\n" + textwrap.dedent(body)
    )
    script = tmp_path / f"{Path(name).stem}.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, log.read_text() if log.exists() else ""


def unstamped(log: str) -> list[str]:
    """The log's own lines without their timestamps, and the traceback's last line (its frames
    name the files it passed through)."""
    lines = log.splitlines()
    own = [STAMP.sub("", ln) for ln in lines if STAMP.match(ln)]
    return own + [ln for ln in lines[-1:] if not STAMP.match(ln)]


def test_a_failure_is_logged_with_its_traceback_and_reraised(tmp_path):
    proc, log = run_script(
        tmp_path,
        """
        with rule_log(sm, "demo"):
            logging.info("working on %s", "x")
            1 / 0
        """,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.rstrip().endswith("ZeroDivisionError: division by zero"), proc.stderr
    assert STAMP.match(log), log
    assert unstamped(log) == [
        "root INFO working on x",
        "root ERROR rule demo failed",
        "ZeroDivisionError: division by zero",
    ], log
    assert "Traceback (most recent call last):" in log and "    1 / 0\n" in log, log


def test_the_log_reads_as_the_inline_boilerplate_wrote_it(tmp_path):
    _, new = run_script(
        tmp_path, 'with rule_log(sm, "demo"):\n    logging.info("working on %s", "x")\n    1 / 0\n'
    )
    _, old = run_script(tmp_path, INLINE, name="inline.log")
    assert unstamped(new) == unstamped(old), (new, old)


def test_a_log_is_appended_to_and_success_logs_no_failure(tmp_path):
    (tmp_path / "rule.log").write_text("earlier\n")
    proc, log = run_script(tmp_path, 'with rule_log(sm, "demo"):\n    logging.info("done")\n')
    assert proc.returncode == 0, proc.stderr
    assert log.startswith("earlier\n") and unstamped(log)[:1] == ["root INFO done"], log
    assert "failed" not in log and "Traceback" not in log


def test_exit_with_turns_the_failure_into_one_console_line(tmp_path):
    proc, log = run_script(
        tmp_path,
        """
        with rule_log(sm, "demo", exit_with=lambda e: f"demo: store broken ({e})"):
            raise OSError("disk gone")
        """,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: demo: store broken (disk gone)", proc.stderr
    assert "root ERROR rule demo failed" in log and log.rstrip().endswith("OSError: disk gone"), log


def test_an_expected_error_is_one_line_in_the_log_and_on_the_console(tmp_path):
    proc, log = run_script(
        tmp_path,
        """
        with rule_log(sm, "demo"), one_line_errors("demo", (ValueError,), "demo m1"):
            raise ValueError("no such task")
        """,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: demo m1: no such task", proc.stderr
    assert unstamped(log) == ["root ERROR rule demo: no such task"], log
    assert "Traceback" not in log and "failed" not in log, log


def test_rulelog_imports_neither_snakemake_nor_torch(tmp_path):
    proc, _ = run_script(tmp_path, "print(sorted({'torch', 'snakemake'} & set(sys.modules)))\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
