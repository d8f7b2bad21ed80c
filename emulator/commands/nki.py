"""`ncemu nki`: run a kernel from an unmodified NKI source file on the emulator and report.

    ncemu nki kernels.py::nki_matmul_tiled_ --inputs in.npz           numbers, time, traffic
    ncemu nki kernels.py::tensor_add --inputs in.npz --grid 2,2        an SPMD launch kernel[2, 2]
    ncemu nki kernels.py::tensor_add --inputs in.npz --outputs out.npz --json --trace t.json

The file may `import nki` / `nki.language as nl` / `nki.isa as nisa` (current API) or
`from neuronxcc import nki` / `neuronxcc.nki.language` / `neuronxcc.nki.isa` (legacy API); for
this run only, those names are this emulator's kernel language.  The file runs because you named
it: it is your code.  Inputs are the .npz arrays, by parameter name when the keys are parameter
names, else in the file's key order (arg0, arg1, ...); 0-d arrays are passed as numbers.
Outputs are saved as out0, out1, ... (the returned tensors, or the parameters the kernel writes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from kernels.nki.errors import NkiError


def parse_grid(text: str) -> tuple[int, ...]:
    try:
        grid = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid {text!r} must be sizes like 4 or 2,3") from None
    if not grid or any(n < 1 for n in grid):
        raise argparse.ArgumentTypeError(f"grid {text!r} needs sizes >= 1")
    return grid


def _load_inputs(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def cmd_nki(args: argparse.Namespace) -> int:
    from emulator.kernel_runner import run_nki_file
    from emulator.nki_compat import file_location

    path, sep, kernel = args.target.rpartition("::")
    if not sep or not path or not kernel:
        print(f"ncemu nki: give the kernel as FILE.py::KERNEL, got {args.target!r}",
              file=sys.stderr)
        return 2
    if not Path(path).is_file():
        print(f"ncemu nki: no such kernel file {path}", file=sys.stderr)
        return 2
    if not Path(args.inputs).is_file():
        print(f"ncemu nki: no such inputs file {args.inputs}", file=sys.stderr)
        return 2
    try:
        run = run_nki_file(path, kernel, _load_inputs(args.inputs), grid=args.grid,
                           machine=args.machine)
    except Exception as err:  # the user's file may raise anything; report it with its line
        where = "" if isinstance(err, NkiError) else file_location(err, path)
        kind = "" if isinstance(err, NkiError) else f"{type(err).__name__}: "
        print(f"ncemu nki: error: {kind}{err}" + (f" (at {where})" if where else ""),
              file=sys.stderr)
        return 1
    if args.trace:
        Path(args.trace).write_text(json.dumps(run.report.chrome_trace()))
    if args.outputs:
        np.savez(args.outputs, **run.outputs)
    if args.json:
        print(json.dumps(run.report.to_json(), indent=2))
        return 0
    launch = f"{run.kernel}{list(run.grid)}" if run.grid else run.kernel
    print(f"kernel {launch} from {path}: {run.instructions} instructions in {run.streams} "
          f"streams")
    print(run.report.text())
    for name, value in run.outputs.items():
        print(f"{name}: {value.dtype} {list(value.shape)}")
    if args.trace:
        print(f"trace written to {args.trace} (open it in ui.perfetto.dev)")
    if args.outputs:
        print(f"outputs written to {args.outputs}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "nki", help="run a kernel from an NKI source file and report",
        description="Run a kernel of an unmodified NKI file on an emulated NeuronCore.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("target", metavar="FILE.py::KERNEL",
                        help="the NKI source file and the kernel in it")
    parser.add_argument("--inputs", required=True,
                        help="an .npz of input arrays (parameter names, or arg0, arg1, ...)")
    parser.add_argument("--outputs", help="write the outputs (out0, out1, ...) to this .npz")
    parser.add_argument("--grid", type=parse_grid,
                        help="SPMD launch grid, e.g. 4 or 2,3 (runs kernel[2, 3])")
    parser.add_argument("--machine", default="inf2",
                        help="instance preset (inf2.xlarge, trn1.2xlarge, ...; inf1/inf2/trn1 "
                             "for short) or a machine .toml file (default inf2)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON only")
    parser.add_argument("--trace", metavar="FILE",
                        help="write a Chrome/Perfetto trace (traceEvents JSON) to FILE")
    parser.set_defaults(handler=cmd_nki)
