"""`ncemu sweep`: time a grid of workloads x shapes x machines x layouts, one CSV row per point.

    ncemu sweep SPEC.toml                    run every point on a local process pool
    ncemu sweep SPEC.toml -o results.csv     rows go there (default: NAME.csv, NAME from the spec)
    ncemu sweep SPEC.toml --scheduler tcp://HOST:8786   run the points on a Dask cluster
    ncemu sweep --workloads                  the workloads and their parameters

Rerunning the same command resumes: points already in the output file are skipped (failed ones
too, unless --retry-failed).  Rows come in completion order; `emulator.sweep.load_results(FILE)`
reads them back sorted by id.  Columns: id (a hash of the point's parameters), workload, machine,
every parameter, status (ok or error), latency_ns, tensor_hfu, util_ENGINE per engine,
hbm_read_bytes, hbm_write_bytes, instructions (wait/signal not counted), flops, emulation_s (wall
time of the point) and error.  A spec (examples/sweeps/*.toml; machine files relative to it):

    [sweep]
    name = "matmul-tiles"
    workload = "matmul"                      # or a list
    machines = ["inf2.xlarge", "inf1.xlarge", "../../machines/toy-32x32.toml"]
    [sweep.shape]                            # every value a list; missing parameters default
    m = [512, 1024]
    dtype = ["bf16"]
    [sweep.layout]
    tile_n = [128, 256, 512]
"""

from __future__ import annotations

import argparse
import signal
import sys

from emulator.sweep import SweepInterrupted, load_spec, run_sweep
from emulator.workloads import WORKLOADS


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def workloads_text() -> str:
    lines = []
    for wl in WORKLOADS.values():
        lines.append(f"{wl.name}: {wl.description}")
        for group in ("shape", "layout"):
            for p in wl.params(group):
                choices = f"; one of {', '.join(map(str, p.choices))}" if p.choices else ""
                lines.append(f"  {group}.{p.name} ({p.kind.__name__}, default {p.default!r}): "
                             f"{p.help}{choices}")
    return "\n".join(lines)


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.workloads:
        print(workloads_text())
        return 0
    if args.spec is None:
        print("ncemu sweep: give a spec file (SPEC.toml), or --workloads", file=sys.stderr)
        return 2
    spec = load_spec(args.spec)
    output = args.output or f"{spec.name}.csv"
    # `kill` (SIGTERM) stops a sweep as Ctrl-C does: running points finish, rows stay valid.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run_sweep(spec, output, workers=args.workers, scheduler=args.scheduler,
                            resume=not args.no_resume, retry_failed=args.retry_failed,
                            limit=args.limit)
    except SweepInterrupted as stop:
        done = stop.summary
        print(f"ncemu sweep: interrupted after {done.computed} new points; {output} holds "
              f"{done.skipped + done.computed} of {done.total}: rerun the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    remaining = summary.total - summary.skipped - summary.computed
    print(f"sweep {spec.name}: {summary.total} points, {summary.computed} computed "
          f"({summary.failed} failed), {summary.skipped} already in {output}"
          + (f", {remaining} left (--limit)" if remaining else ""))
    for message, count in summary.errors.most_common(5):
        print(f"  {count} x {message}")
    print(f"results: {output}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sweep", help="time a grid of workloads x shapes x machines x layouts into a CSV",
        description="Run every point of a sweep spec in timing-only mode, in parallel, "
                    "streaming one CSV row per point; a rerun resumes.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("spec", nargs="?", metavar="SPEC.toml", help="the sweep spec")
    parser.add_argument("-o", "--output", metavar="FILE.csv",
                        help="results file (default: NAME.csv in the current folder)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="local worker processes (default: one per CPU)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run on the Dask cluster at ADDRESS (needs ncemu[sweep] and ncemu "
                             "installed on the workers) instead of a local process pool")
    parser.add_argument("--no-resume", action="store_true",
                        help="overwrite the results file instead of skipping its points")
    parser.add_argument("--retry-failed", action="store_true",
                        help="rerun the points whose row in the results file is an error")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="compute at most N points (try a sweep out; rerun to go on)")
    parser.add_argument("--workloads", action="store_true",
                        help="list the workloads and their shape and layout parameters")
    parser.set_defaults(handler=cmd_sweep)
