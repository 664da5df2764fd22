"""`hades` command line: small tools around the pipeline.

    hades params config/paper.yaml [--json]     parameter counts of every grid id (meta device)
    hades train --config C --model M            train one grid id (also: python -m hades.train)
    hades plan config/paper.yaml [--json]       jobs per stage and a GPU-hours estimate
    hades prepare-eval-data TASK SRC DST        a benchmark's release -> lm-eval's schema (offline eval)

Each subcommand lives in its own `_cmd_<name>` function and is registered in `main`.
"""

from __future__ import annotations

import argparse
import sys

from hades.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hades", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    # subcommands register here: each helper adds one `_register_<name>(sub)` call
    _register_params(sub)
    _register_train(sub)
    _register_plan(sub)
    _register_prepare(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _register_params(sub) -> None:
    p = sub.add_parser("params", help="parameter counts of every grid id of a config")
    p.add_argument("config")
    p.add_argument("--json", action="store_true", help="print {grid id: count}")
    p.set_defaults(func=_cmd_params)


def _cmd_params(args) -> int:
    from hades.params import count_params_table

    print(count_params_table(args.config, as_json=args.json))
    return 0


def _register_plan(sub) -> None:
    p = sub.add_parser("plan", help="jobs per stage and GPU-hours estimate of a config (hades/plan.py)")
    p.add_argument("config")
    p.add_argument("--json", action="store_true", help="machine-readable plan")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s per GPU")
    p.add_argument("--train-mfu", type=float, default=None, help="model FLOPs utilisation of training")
    p.add_argument("--eval-mfu", type=float, default=None, help="model FLOPs utilisation of evaluation")
    p.add_argument("--train-model", action="store_true", default=None,
                   help="training GPU-hours from the FLOP model only (not the measured step times)")
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(args) -> int:
    from hades.plan import run

    names = ("peak_tflops", "train_mfu", "eval_mfu", "train_model")
    assumptions = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    print(run(args.config, as_json=args.json, **assumptions))
    return 0


def _register_train(sub) -> None:
    from hades.train.cli import add_arguments  # argparse only: torch loads when the command runs

    p = sub.add_parser("train", help="train one grid id, resuming from its checkpoints (hades/train/)")
    add_arguments(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from hades.train.cli import run, setup_logging

    setup_logging()
    return run(args)


def _register_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare-eval-data",
        help="convert a benchmark's distribution into the schema of lm-eval's stock task (hades/eval/prepare.py)",
    )
    p.add_argument("task", help="wikitext, lambada_openai, piqa, hellaswag, winogrande, arc_easy, arc_challenge, boolq, openbookqa")
    p.add_argument("src", help="the source file (or a directory holding it)")
    p.add_argument("dst", help="output dir; point eval.local_data.<task> at it")
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args) -> int:
    from hades.eval.prepare import PrepareError, prepare_eval_data

    try:
        meta = prepare_eval_data(args.task, args.src, args.dst)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{meta['task']}: {meta['records']} records ({meta['layout']}) -> {args.dst}/{meta['file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
