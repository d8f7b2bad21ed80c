"""`ncemu systolic`: step a small GEMM through the PE-level systolic array, cycle by cycle.

    ncemu systolic                              ws on a 4x4 array, out[6,5] with K=4, every frame
    ncemu systolic --dataflow os --step         one frame at a time: Enter/n next, b back, q quit
    ncemu systolic --gif wave.gif --png-dir f/  the same frames as an animation and as images

out[M, N] = stationary[K, M].T @ moving[K, N], K on the array's rows as on the Tensor engine.
The end checks the result against numpy and explains the cycle count fold by fold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emulator.runner import core_and_chip
from emulator.systolic import DATAFLOWS, SystolicArray, record, simulate
from emulator.teaching import (
    ROLES,
    VALUE_KINDS,
    check_macs_recordable,
    check_recordable,
    check_sizes,
    fold_timings,
    random_gemm,
    render_frame,
    step_through,
    summarise,
)


def cmd_systolic(args: argparse.Namespace) -> int:
    if args.machine is not None:  # the machine's PE array, unless --rows/--cols say otherwise
        core = core_and_chip(args.machine)[0]
        args.rows = core.pe_rows if args.rows is None else args.rows
        args.cols = core.pe_cols if args.cols is None else args.cols
    args.rows = 4 if args.rows is None else args.rows
    args.cols = 4 if args.cols is None else args.cols
    check_sizes(**{f"--{name}": getattr(args, name) for name in ("rows", "cols", "m", "k", "n")})
    if args.fps <= 0:
        raise ValueError(f"--fps {args.fps} must be > 0")
    if args.gif:
        gif = Path(args.gif)
        if gif.suffix.lower() != ".gif":
            raise ValueError(f"--gif {gif} must end in .gif")
        if not gif.parent.is_dir():
            raise ValueError(f"--gif {gif}: directory {gif.parent} does not exist")
    if args.png_dir and Path(args.png_dir).exists() and not Path(args.png_dir).is_dir():
        raise ValueError(f"--png-dir {args.png_dir} exists and is not a directory")
    check_macs_recordable(args.m, args.k, args.n)
    array = SystolicArray(args.rows, args.cols, args.dataflow)
    stationary, moving = random_gemm(args.k, args.m, args.n, args.seed, args.values)
    fast = simulate(array, stationary, moving)
    check_recordable(array, fast.total_cycles)
    frames = record(array, stationary, moving)
    timings = fold_timings(array, frames)
    last = frames[-1].cycle
    pages = [render_frame(array, frame, timings[frame.fold], last, len(timings), args.values)
             for frame in frames]
    verdict = summarise(array, frames, timings, stationary, moving, fast)

    intro = (f"{array.dataflow} ({DATAFLOWS[array.dataflow].summary}) on a {array.rows}x"
             f"{array.cols} array: out[{args.m},{args.n}] = stationary[{args.k},{args.m}].T @ "
             f"moving[{args.k},{args.n}], {args.values} values, seed {args.seed}\n"
             f"registers: {ROLES[array.dataflow].legend};  *k,m,n = the MAC a PE did this cycle\n")
    out = sys.stdout
    if args.step:
        # Each screen repeats the introduction: on a terminal the previous one is cleared.
        screens = [intro + "\n" + page for page in pages]
        try:
            step_through(screens, sys.stdin.readline, _writer(out), clear=out.isatty())
        except KeyboardInterrupt:  # Ctrl-C while stepping: leave quietly, as a shell tool does
            out.write("\n")
            return 130
    else:
        out.write(intro + "\n")
        for page in pages:
            out.write(page + "\n\n")
    out.write(verdict.text + "\n")

    if args.gif or args.png_dir:
        from emulator.plots import systolic_gif, systolic_pngs
        if args.gif:
            systolic_gif(array, frames, timings, args.gif, fps=args.fps, values=args.values)
            out.write(f"animation written to {args.gif} ({len(frames)} frames)\n")
        if args.png_dir:
            paths = systolic_pngs(array, frames, timings, args.png_dir, values=args.values)
            out.write(f"{len(paths)} frames written to {Path(args.png_dir)}/\n")
    return 0 if verdict.passed else 1


def _writer(stream):
    def write(text: str) -> None:
        stream.write(text)
        stream.flush()
    return write


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "systolic", help="step a small GEMM through the PE-level systolic array",
        description="Draw every register of a small PE array, cycle by cycle, for a random GEMM; "
                    "check the result and explain the cycle count.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--rows", type=int, default=None,
                        help="PE rows (default 4, or the --machine's array)")
    parser.add_argument("--cols", type=int, default=None,
                        help="PE columns (default 4, or the --machine's array)")
    parser.add_argument("--machine", default=None,
                        help="take the array size from an instance preset or machine .toml "
                             "(large arrays only fit small GEMMs' recording limit)")
    parser.add_argument("--dataflow", default="ws", choices=sorted(DATAFLOWS),
                        help="weight-, output- or input-stationary (default ws)")
    parser.add_argument("--m", type=int, default=6, help="M: columns of stationary (default 6)")
    parser.add_argument("--k", type=int, default=4, help="K: contraction (default 4)")
    parser.add_argument("--n", type=int, default=5, help="N: columns of moving (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random operands")
    parser.add_argument("--values", default="int", choices=VALUE_KINDS,
                        help="small integers in [-4, 4] (exact, default) or uniform [-1, 1) "
                             "floats")
    parser.add_argument("--step", action="store_true",
                        help="one frame at a time: Enter or n next, b back, q quit")
    parser.add_argument("--gif", metavar="FILE", help="write the frames as an animated GIF")
    parser.add_argument("--png-dir", metavar="DIR", help="write one PNG per frame into DIR")
    parser.add_argument("--fps", type=float, default=2.0,
                        help="frames per second of the GIF (default 2)")
    parser.set_defaults(handler=cmd_systolic)
