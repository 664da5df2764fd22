"""The log of a rule's script (workflow/scripts/*.py): where its lines go and how a failure is
written, once for every rule.

    with rule_log(snakemake, "corpus"):
        build_corpus(...)

sends the root logger's lines, INFO and above, to the rule's declared log (`log[0]`); an
exception escaping the block is written there as `rule corpus failed` with its traceback, then
re-raised (Snakemake reports the job failed and names the log). `one_line_errors` turns an
expected error (a bad input the user fixes, no bug) into one ERROR line in the log and one
`error: ...` line on the console, without a traceback.

It receives Snakemake's injected `snakemake` object (anything with `.log`) and imports no
Snakemake and no torch (standard library only): the scripts import it first.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


@contextlib.contextmanager
def rule_log(
    sm: Any, rule: str, *, exit_with: Callable[[Exception], str] | None = None
) -> Iterator[None]:
    """Log to `sm.log[0]` (appended; root logger, INFO, FORMAT) for the block. An Exception
    raised in it is logged as `rule <rule> failed` with its traceback and re-raised; with
    `exit_with`, the job exits instead with `error: <exit_with(e)>` as its one console line (a
    failure whose traceback is long and whose cause can be said in a line). SystemExit and
    KeyboardInterrupt pass through unlogged."""
    logging.basicConfig(filename=sm.log[0], level=logging.INFO, format=FORMAT)
    try:
        yield
    except Exception as e:
        logging.exception("rule %s failed", rule)
        if exit_with is None:
            raise
        sys.exit(f"error: {exit_with(e)}")


@contextlib.contextmanager
def one_line_errors(
    rule: str, errors: tuple[type[BaseException], ...], label: str | None = None
) -> Iterator[None]:
    """An error of `errors` raised in the block is logged as one ERROR line `rule <rule>: <e>`
    and the job exits with `error: <label or rule>: <e>` on the console (status 1), no
    traceback. Other exceptions pass through (to rule_log, which logs their traceback)."""
    try:
        yield
    except errors as e:
        logging.error("rule %s: %s", rule, e)
        sys.exit(f"error: {label or rule}: {e}")


__all__ = ["FORMAT", "one_line_errors", "rule_log"]
