"""The `ncemu` command line: one subcommand per module of `emulator.commands`.

    ncemu run            emulate the built-in tiled bf16 matmul on one Inf2 NeuronCore
    ncemu COMMAND --help what a command does and its options
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from emulator.commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ncemu", description="Cycle-approximate emulator of AWS NeuronCore accelerators.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"emulator.commands.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except BrokenPipeError:  # the reader went away (`ncemu run --list | head`): not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit flush quiet
        return 0
    except (ValueError, KeyError, RuntimeError, IndexError) as err:
        print(f"ncemu {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
