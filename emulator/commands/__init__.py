"""Subcommands of `ncemu`: one module each, exposing `register(subparsers)`."""

COMMANDS = ("run", "systolic", "timeline", "sweep", "bench", "nki", "compile", "compare")
