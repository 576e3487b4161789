"""The `mobilenet` command. Each subcommand lives in its own module; this file only wires them up.

A user's mistake (a :class:`MobilenetError`, a bad flag, or a path the system refuses) prints one line and
exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
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


def one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
    """Python echoes the source line that warned (often deep in a library); a user needs the message alone."""
    return f"mobilenet: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    formatter, warnings.formatwarning = warnings.formatwarning, one_line_warning
    try:
        return int(args.func(args) or 0)
    except MobilenetError as exc:
        print(f"mobilenet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`mobilenet models | head`): not an error, and nothing more to print.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.filename is None:
            raise
        # A path the system refused (permissions, a full disk, a file where a folder should be): the user's to fix.
        print(f"mobilenet {args.command}: error: {exc.filename}: {exc.strerror}; check the path and its permissions",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mobilenet: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatter  # main() also runs inside other programs (tests, notebooks)


if __name__ == "__main__":
    sys.exit(main())
