"""Which lm-eval task definition each requested task runs with, and where its data comes from.

Three kinds of task (docs/design.md "Decisions", 4: one `simple_evaluate` path everywhere):

- project tasks (`toy_ppl`, `toy_cloze`, hades/eval/tasks/toy/): lm-eval YAMLs over the generated
  corpus's held-out files; the default study runs these.
- the paper's nine tasks offline (hades/eval/tasks/offline/): the stock lm-eval task included as
  is, with only the data location changed to a dir prepared by `hades prepare-eval-data`
  (eval.local_data.<task>).
- any task online: lm-eval's stock definition, data from the Hugging Face hub.

The templates hold `${...}` placeholders (the installed lm_eval/tasks dir, the data location, a
per-run datasets cache) that `render_tasks` fills into a run directory that is then given to
lm-eval's `TaskManager(include_path=...)`. A rendered task keeps the stock task's name, so it
overrides the stock one and its metrics keep their usual names.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from hades.data.io import DataError, iter_jsonl
from hades.io import atomic_write_text, sha256_file

from .prepare import EVAL_SPLIT, PREPARED_META, prepared_file

TASKS_DIR = Path(__file__).parent / "tasks"
# project task -> its file in the corpus dir (docs/CONTRACTS.md: results/data/corpus/)
PROJECT_TASKS = {"toy_ppl": "val.jsonl", "toy_cloze": "cloze.jsonl"}
OFFLINE_TASKS = tuple(EVAL_SPLIT)


class EvalTaskError(ValueError):
    """A requested task that cannot run as configured; one line naming the task and the fix."""


@dataclass
class TaskPlan:
    names: list[str]  # what to pass to simple_evaluate(tasks=...)
    include_dir: Path | None  # TaskManager(include_path=...) for the rendered YAMLs
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> data provenance
    needs_stock_index: bool = False  # some task runs from its stock definition, looked up by name


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def prepared_dir(cfg, task: str) -> str:
    """Where rule prepare_eval_data writes eval.sources.<task>: <results_dir>/eval_data/<task>."""
    return str(Path(cfg.results_dir) / "eval_data" / task)


def default_local_data(cfg) -> dict[str, str]:
    """The local data of every task a Config can name: the project tasks' corpus files, the dirs
    prepared from eval.sources, and eval.local_data (which wins)."""
    corpus = Path(cfg.results_dir) / "data" / "corpus"
    out = {task: str(corpus / name) for task, name in PROJECT_TASKS.items()}
    out.update({task: prepared_dir(cfg, task) for task in cfg.eval.sources})
    out.update(dict(cfg.eval.local_data))
    return out


def _yaml_str(value: str) -> str:
    """Escape for a YAML double-quoted scalar (the templates quote every placeholder)."""
    return json.dumps(str(value))[1:-1]


def _render(template: Path, out: Path, **values: str) -> None:
    text = Template(template.read_text()).substitute({k: _yaml_str(v) for k, v in values.items()})
    atomic_write_text(out, text)  # a killed render leaves no half-written task file for lm-eval to read


def _annotate_token_counts(src: Path, dst: Path, token_count: Callable[[str], int]) -> int:
    """Copy a {"text"} jsonl adding "n_tokens" (for token perplexity); returns the doc count."""
    n = 0
    with open(dst, "w", encoding="utf-8") as fout:
        for doc in iter_jsonl(src):
            doc["n_tokens"] = token_count(doc["text"])
            fout.write(json.dumps(doc, ensure_ascii=False) + "\n")
            n += 1
    return n


def _check_jsonl(path: Path, task: str) -> int:
    """The record count of a project task's data file, read once here because lm-eval's loader
    (datasets) reports a bad line without the file; a DataError becomes an EvalTaskError."""
    try:
        return sum(1 for _ in iter_jsonl(path))
    except DataError as e:
        raise EvalTaskError(f"project task {task!r}: {e}") from None


def check_tasks(tasks: Sequence[str], local_tasks: Iterable[str], *, offline: bool) -> None:
    """Raise EvalTaskError (one line) for the first task that cannot run offline: no local data
    and no offline definition. Cheap (no files are read), so the workflow calls it when it
    parses the config, long before training finishes and evaluation starts."""
    local = set(local_tasks)
    for task in tasks:
        if task in PROJECT_TASKS:
            continue
        if task in local and task not in OFFLINE_TASKS:
            raise EvalTaskError(
                f"eval.local_data.{task}: no offline definition of task {task!r}; offline tasks: "
                f"{', '.join(OFFLINE_TASKS + tuple(PROJECT_TASKS))}"
            )
        if offline and task not in local:
            raise EvalTaskError(
                f"lm-eval task {task!r} requested offline but eval.local_data.{task} is not set: "
                f"prepare its data with `hades prepare-eval-data {task} SRC DST` and set "
                f"eval.local_data.{task}: DST (or eval.sources.{task}: SRC)"
                if task in OFFLINE_TASKS else
                f"lm-eval task {task!r} has no offline definition; offline tasks: "
                f"{', '.join(OFFLINE_TASKS + tuple(PROJECT_TASKS))} (or set eval.offline: false)"
            )


def _declared_stock_names(names: Iterable[str], tasks_dir: Path) -> set[str]:
    """Those of `names` that one of lm-eval's task YAMLs declares on a line of its own (`task:`,
    `group:` or `tag:`). Files whose path holds a name are read first and the scan stops once
    all are found: a few files for the usual tasks (the stock layout names a task's dir or file
    after it), all ~14k (seconds) only for a name declared nowhere. It misses a few hundred
    names (tags given as lists, Python-defined tasks), which the caller looks up in lm-eval's
    own index (TaskManager, ~20 s) before refusing them."""
    left = set(names)
    paths = sorted(tasks_dir.rglob("*.yaml"), key=lambda p: not any(n in str(p) for n in left))
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        for name in [n for n in left if n in text]:
            line = rf"""^["']?(?:task|group|tag)["']?:\s*["']?{re.escape(name)}["']?\s*(?:#.*)?$"""
            if re.search(line, text, re.M):
                left.discard(name)
        if not left:
            break
    return set(names) - left


def check_stock_task_names(tasks: Sequence[str], local_tasks: Iterable[str], *, offline: bool) -> None:
    """Raise EvalTaskError for a task that would run from lm-eval's stock definitions (online,
    no local data, not a project task) but that lm-eval does not define: otherwise the typo
    fails only in rule lm_eval, after training. Offline runs never look up stock tasks
    (check_tasks refuses them). Without lm-eval in this environment (Snakemake run from
    another env than the eval stage's) nothing is checked and lm-eval reports it later."""
    import importlib.util

    local = set(local_tasks)
    stock = [t for t in tasks if t not in PROJECT_TASKS and t not in local]
    spec = importlib.util.find_spec("lm_eval")  # locates the package without importing it
    if offline or not stock or spec is None or not spec.submodule_search_locations:
        return
    tasks_dir = Path(next(iter(spec.submodule_search_locations))) / "tasks"
    declared = _declared_stock_names(stock, tasks_dir)
    unknown = [t for t in stock if t not in declared]
    if unknown:
        from lm_eval.tasks import TaskManager

        index = set(TaskManager().all_tasks)
        unknown = [t for t in unknown if t not in index]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(index | set(PROJECT_TASKS)), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise EvalTaskError(
                f"eval.tasks: {unknown[0]!r} is neither an lm-eval task, group or tag nor a project task "
                f"({', '.join(PROJECT_TASKS)}){hint}"
            )


def render_tasks(
    tasks: Sequence[str],
    local_data: Mapping[str, str] | None,
    run_dir: str | Path,
    *,
    offline: bool,
    token_count: Callable[[str], int] | None = None,
) -> TaskPlan:
    """Resolve `tasks` into lm-eval task names, rendering the YAMLs they need into `run_dir`.

    Raises EvalTaskError (one line) for a task that cannot run: a project task whose data file
    is missing, a local_data dir that was not prepared, or a hub task requested offline without
    local data.
    """
    local_data = dict(local_data or {})
    check_tasks(tasks, local_data, offline=offline)
    run_dir = Path(run_dir)
    cache_dir = run_dir / "hf_datasets_cache"
    plan = TaskPlan(names=[], include_dir=None)
    for task in tasks:
        if task in PROJECT_TASKS:
            src = Path(local_data.get(task, ""))
            if not local_data.get(task) or not src.is_file():
                raise EvalTaskError(
                    f"project task {task!r}: data file {str(src) or '<unset>'} does not exist "
                    f"(written by the data stage as {PROJECT_TASKS[task]}; or set eval.local_data.{task})"
                )
            _check_jsonl(src, task)
            data_file = src
            if task == "toy_ppl" and token_count is not None:
                (run_dir / "data").mkdir(parents=True, exist_ok=True)
                data_file = run_dir / "data" / f"{task}.jsonl"
                _annotate_token_counts(src, data_file, token_count)
            _render(TASKS_DIR / "toy" / f"{task}.yaml", run_dir / f"{task}.yaml",
                    DATA_FILE=str(data_file.resolve()), CACHE_DIR=str(cache_dir.resolve()))
            plan.sources[task] = {"file": str(src), "sha256": sha256_file(src)}
        elif task in local_data:
            data_dir = Path(local_data[task])
            if not prepared_file(task, data_dir).is_file():
                raise EvalTaskError(
                    f"eval.local_data.{task}: {data_dir} has no {prepared_file(task, data_dir).name}; "
                    f"prepare it with `hades prepare-eval-data {task} SRC {data_dir}`"
                )
            _render(TASKS_DIR / "offline" / f"{task}.yaml", run_dir / f"{task}.yaml",
                    LM_EVAL_TASKS=str(lm_eval_tasks_dir()), DATA_DIR=str(data_dir.resolve()),
                    CACHE_DIR=str(cache_dir.resolve()))
            meta_path = data_dir / PREPARED_META
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            plan.sources[task] = {"dir": str(data_dir), "prepared": meta,
                                  "sha256": sha256_file(prepared_file(task, data_dir))}
        else:
            plan.sources[task] = {"hub": "lm-eval stock task definition"}
            plan.needs_stock_index = True
        plan.names.append(task)
    if any((run_dir / f"{t}.yaml").is_file() for t in plan.names):
        plan.include_dir = run_dir
    return plan
