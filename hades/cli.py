"""`hades` command line: small tools around the pipeline.

    hades params config/paper.yaml [--json]     parameter counts of every grid id (meta device)

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


if __name__ == "__main__":
    sys.exit(main())
