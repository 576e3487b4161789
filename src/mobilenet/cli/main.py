"""The `mobilenet` command. Each subcommand lives in its own module; this file only wires them up.

A user's mistake (a :class:`MobilenetError`, or a bad flag) prints one line and exits with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mobilenet.errors import MobilenetError


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; users asked for the error alone, on one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from mobilenet.cli import bench_commands, export_commands, model_commands, train_commands, weights_commands

    parser = OneLineParser(prog="mobilenet", description="The MobileNet family for mobile and embedded vision.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for module in (model_commands, train_commands, weights_commands, export_commands, bench_commands):
        module.add_parsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MobilenetError as exc:
        print(f"mobilenet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mobilenet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
