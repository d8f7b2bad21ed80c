"""`ncemu bench`: run one of the emulator's own speed benchmarks (the suites of `benchmarks/`).

    ncemu bench --list               the suites, one line each
    ncemu bench SUITE [ARGS...]      run benchmarks.SUITE's main(ARGS); same as
                                     `python -m benchmarks.SUITE ARGS`
    ncemu bench SUITE --help         a suite's own options, where it takes any
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import inspect
import pkgutil
import sys
from pathlib import Path


def suites() -> dict[str, str]:
    """Every benchmark suite -> the first line of its docstring, read without importing it
    (a suite may need optional packages only when it runs)."""
    package = importlib.util.find_spec("benchmarks")
    if package is None or not package.submodule_search_locations:
        raise RuntimeError("the benchmarks package is not installed beside emulator")
    found = {}
    for module in pkgutil.iter_modules(package.submodule_search_locations):
        if module.ispkg or module.name.startswith("_"):
            continue
        path = Path(module.module_finder.path) / f"{module.name}.py"
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        found[module.name] = doc.strip().splitlines()[0] if doc.strip() else ""
    return dict(sorted(found.items()))


def run_suite(name: str, args: list[str]) -> int:
    """Run `benchmarks.<name>.main(args)`; an unknown suite raises listing the known ones."""
    known = suites()
    if name not in known:
        raise ValueError(f"unknown benchmark suite {name!r}; suites: {', '.join(known)}")
    main = importlib.import_module(f"benchmarks.{name}").main
    takes_args = bool(inspect.signature(main).parameters)
    if args and not takes_args:
        raise ValueError(f"suite {name} takes no arguments (got {' '.join(args)})")
    # A suite's argparse names itself after argv[0]: make its usage read `ncemu bench SUITE`.
    argv, sys.argv = sys.argv, [f"ncemu bench {name}", *args]
    try:
        main(args) if takes_args else main()
    finally:
        sys.argv = argv
    return 0


def suites_text() -> str:
    known = suites()
    width = max(map(len, known), default=0)
    return "\n".join(f"  {name:<{width}}  {summary}" for name, summary in known.items())


def cmd_bench(args: argparse.Namespace) -> int:
    if args.list or args.suite is None:
        print(suites_text())
        return 0 if args.list else 2
    return run_suite(args.suite, args.args)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench", help="run a speed benchmark of the emulator itself (--list: the suites)",
        description="Run a benchmark suite of the emulator itself (benchmarks/README.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{__doc__}\nsuites:\n{suites_text()}")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    parser.add_argument("suite", nargs="?", metavar="SUITE", help="the suite to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="arguments of the suite (its --help lists them)")
    parser.set_defaults(handler=cmd_bench)
