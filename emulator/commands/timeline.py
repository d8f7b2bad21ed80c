"""`ncemu timeline`: draw a NeuronCore run as engine utilisation over time and a Gantt chart.

    ncemu timeline matmul -o run.png                the built-in tiled matmul (timing only)
    ncemu timeline matmul --shape 512x256x1024 -o run.png
    ncemu timeline PROGRAM.nasm -o run.png          a text-assembly program
    ncemu timeline trace.json -o run.png            a trace written by `ncemu run --trace`

The picture sits beside the Perfetto trace: --trace FILE also writes that trace for a program.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emulator.commands.run import parse_shape
from emulator.runner import core_and_chip, run
from isa.assembly import parse_program
from isa.dtypes import DTYPES


def _program(args: argparse.Namespace):
    from kernels.programs import tiled_matmul

    if args.what == "matmul":
        return tiled_matmul(*args.shape, args.dtype, target=core_and_chip(args.machine)[0].target)
    return parse_program(Path(args.what).read_text())


def cmd_timeline(args: argparse.Namespace) -> int:
    from emulator.plots import timeline_plot

    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise ValueError(f"-o {output} must end in .png")
    if not output.parent.is_dir():
        raise ValueError(f"-o {output}: directory {output.parent} does not exist")
    if args.bins < 1:
        raise ValueError(f"--bins {args.bins} must be >= 1")
    if args.what.endswith(".json"):
        path = Path(args.what)
        if not path.is_file():
            print(f"ncemu timeline: no such trace file {path}", file=sys.stderr)
            return 2
        if args.trace:
            raise ValueError("--trace writes the trace of a program; the input is already one")
        try:
            source = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not JSON: {err}") from None
        what = f"trace {path}"
    elif args.what == "matmul" or args.what.endswith(".nasm"):
        if args.what != "matmul" and not Path(args.what).is_file():
            print(f"ncemu timeline: no such program file {args.what}", file=sys.stderr)
            return 2
        program = _program(args)
        report = run(program, None, args.machine, functional=False).report
        if args.trace:
            Path(args.trace).write_text(json.dumps(report.chrome_trace()))
            print(f"trace written to {args.trace} (open it in ui.perfetto.dev)")
        source = report.schedule
        what = f"program {program.name}: latency {report.latency_ns / 1e3:.3f} us"
    else:
        print(f"ncemu timeline: unknown run {args.what!r}; give 'matmul', a .nasm program or a "
              f".json trace", file=sys.stderr)
        return 2
    timeline_plot(source, output, bins=args.bins)
    print(f"{what}\ntimeline written to {output}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "timeline", help="draw a run's engine utilisation and per-stream Gantt chart (PNG)",
        description="Draw one NeuronCore run: engine utilisation over time (binned) and one "
                    "Gantt row per engine stream and DMA queue, bars coloured by opcode.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("what", metavar="RUN",
                        help="'matmul' (built-in tiled matmul), PROGRAM.nasm, or TRACE.json "
                             "from `ncemu run --trace`")
    parser.add_argument("-o", "--output", required=True, metavar="FILE.png",
                        help="where to write the picture")
    parser.add_argument("--shape", type=parse_shape, default=(1024, 512, 1024),
                        help="M x K x N of the built-in matmul (default 1024x512x1024)")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES),
                        help="operand dtype of the built-in matmul (default bf16)")
    parser.add_argument("--machine", default="inf2",
                        help="instance preset or machine .toml file (default inf2)")
    parser.add_argument("--bins", type=int, default=200,
                        help="time bins of the utilisation plot (default 200)")
    parser.add_argument("--trace", metavar="FILE",
                        help="also write the run's Chrome/Perfetto trace to FILE")
    parser.set_defaults(handler=cmd_timeline)
