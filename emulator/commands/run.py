"""`ncemu run`: run a kernel or an assembly program, check its numbers, report its time.

    ncemu run                       the built-in tiled bf16 matmul on one Inf2 NeuronCore
    ncemu run --shape 512x256x1024  the same at another M x K x N
    ncemu run PROGRAM.nasm          a text-assembly program (inputs random, or --inputs FILE.npz)
    ncemu run --list                the library's kernels; ncemu run softmax --shape R=256,C=1024
    ncemu run matmul_naive --shape 512x1024x512 --layout TILE_N=128
    ncemu run --json                the report as JSON; --trace FILE writes a Perfetto trace
    ncemu run --timing-only         time without computing values
    ncemu run bert-base --batch 1 --seq 128 --instance inf2.xlarge --timing-only
                                    a whole model (mlp, bert-base, bert-large, gpt2, resnet50,
                                    resnet18) compiled, lowered to the library's kernels, run
    ncemu run model.onnx --inputs x.npz     an ONNX model (inputs random without --inputs)
    ncemu run resnet18 --batch 2 --cores 2 --tile stage1.block0/conv1:tile_n=256 --timing-only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from emulator.commands.compile import add_model_arguments, is_model
from emulator.runner import core_and_chip, run
from isa.assembly import parse_program
from isa.dtypes import DTYPES
from isa.program import Program


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        m, k, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"shape {text!r} must be MxKxN, e.g. 1024x512x1024") from None
    return m, k, n


def _load_inputs(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _random_inputs(program: Program, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for tensor in program.tensors:
        if tensor.kind != "input":
            continue
        if tensor.dtype.is_float:
            arrays[tensor.name] = rng.standard_normal(tensor.shape).astype(np.float32)
        else:
            info = np.iinfo(tensor.dtype.storage)
            low, high = max(info.min, -100), min(info.max, 100)
            arrays[tensor.name] = rng.integers(low, high, tensor.shape).astype(tensor.dtype.storage)
    return arrays


def parse_assignments(text: str | None, what: str) -> dict[str, int | float | str]:
    """`K=V,K=V` into a dict; values become ints or floats where they read as numbers."""
    values: dict[str, int | float | str] = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} {item!r} must be KEY=VALUE (e.g. M=512,N=1024)")
        for kind in (int, float):
            try:
                values[key.strip()] = kind(raw)
                break
            except ValueError:
                continue
        else:
            values[key.strip()] = raw.strip()
    return values


def _library_shape(entry, text: str | None) -> dict:
    """`--shape` for a library kernel: KEY=VALUE pairs, or MxKxN for kernels sized M, K, N."""
    if text and "=" not in text:
        names = [p.name for p in entry.shapes]
        if sorted(names) != ["K", "M", "N"]:
            raise ValueError(f"kernel {entry.name} is sized by {', '.join(names)}: give "
                             f"--shape {','.join(f'{n}=...' for n in names)}")
        try:
            m, k, n = parse_shape(text)
        except argparse.ArgumentTypeError as err:
            raise ValueError(str(err)) from None
        return {"M": m, "K": k, "N": n}
    return parse_assignments(text, "--shape")


def cmd_run_library(args: argparse.Namespace, entry) -> int:
    """Run one kernel of the library: its numbers against its golden, and its report."""
    from emulator.kernel_runner import benchmark, trace

    shape = _library_shape(entry, args.shape)
    options = parse_assignments(args.option, "--option")
    layout = parse_assignments(args.layout, "--layout")
    arrays = entry.inputs(shape, options, dtype=args.dtype, seed=args.seed)
    kwargs = entry.kernel_kwargs(options, layout)
    if args.timing_only:
        program = trace(entry.kernel, *arrays, target=args.machine, **kwargs)
        report, outputs = run(program, None, args.machine, functional=False).report, None
    else:
        outputs, report = benchmark(entry.kernel, target=args.machine)(*arrays, **kwargs)
    _write_reports(args, report)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(f"{entry.name}: {entry.summary}; shape {entry.shape(shape)}, layout "
          f"{entry.layout_values(layout)}, {args.dtype}")
    print(report.text())
    if outputs is None:
        return 0
    golden = entry.reference(arrays, options)
    got = np.asarray(outputs[0] if isinstance(outputs, tuple) else outputs, np.float64)
    tolerance = entry.tolerance_for(args.dtype)
    ok = np.allclose(got, golden, rtol=tolerance.rtol, atol=tolerance.atol)
    print(f"numerics: max |error| {np.abs(got - golden).max():.3g} vs the numpy golden: "
          f"{'PASS' if ok else 'FAIL'} (rtol {tolerance.rtol}, atol {tolerance.atol})")
    return 0 if ok else 1


def _write_reports(args: argparse.Namespace, report) -> None:
    if args.trace:
        Path(args.trace).write_text(json.dumps(report.chrome_trace()))
        print(f"trace written to {args.trace} (open it in ui.perfetto.dev)", file=sys.stderr)
    if args.roofline:
        from emulator.plots import roofline_plot
        spec, chip = core_and_chip(args.machine)
        roofline_plot(report, spec, chip, args.roofline)
        print(f"roofline written to {args.roofline}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from kernels.library import LIBRARY
    from kernels.programs import tiled_matmul, tiled_matmul_inputs, tiled_matmul_reference

    if args.list:
        print("kernels (ncemu run NAME; --describe NAME for its shapes and layouts):")
        print(f"  {'tiled_matmul':<18} the built-in hand-scheduled bf16 matmul (the default)")
        for name, entry in LIBRARY.items():
            print(f"  {name:<18} {entry.summary}")
        return 0
    if args.describe:
        if args.describe not in LIBRARY:
            raise ValueError(f"unknown kernel {args.describe!r}; `ncemu run --list` lists them")
        print(LIBRARY[args.describe].describe())
        return 0
    if is_model(args.what):
        return cmd_run_model(args)
    given = _model_options_given(args)
    if given:
        print(f"ncemu run: {', '.join(given)} only apply to a model (mlp, bert-base, "
              f"bert-large, gpt2, resnet50, resnet18 or an .onnx file), not "
              f"{args.what or 'tiled_matmul'!r}", file=sys.stderr)
        return 2
    if args.what in LIBRARY:
        return cmd_run_library(args, LIBRARY[args.what])
    reference = None
    if args.what is None or args.what == "tiled_matmul":
        try:
            m, k, n = parse_shape(args.shape or "1024x512x1024")
        except argparse.ArgumentTypeError as err:
            print(f"ncemu run: error: {err}", file=sys.stderr)
            return 2
        program = tiled_matmul(m, k, n, args.dtype, target=core_and_chip(args.machine)[0].target)
        inputs = tiled_matmul_inputs(program, args.seed)
        if not args.timing_only:
            reference = {"result": tiled_matmul_reference(inputs, args.dtype)}
    elif args.what.endswith(".nasm"):
        path = Path(args.what)
        if not path.is_file():
            print(f"ncemu run: no such program file {path}", file=sys.stderr)
            return 2
        program = parse_program(path.read_text())
        inputs = _load_inputs(args.inputs) if args.inputs else _random_inputs(program, args.seed)
    else:
        print(f"ncemu run: unknown target {args.what!r}; give a kernel name (ncemu run --list), "
              f"a model (mlp, bert-base, bert-large, gpt2, gpt-small, resnet50, resnet18, "
              f"FILE.onnx) or a .nasm file", file=sys.stderr)
        return 2
    result = run(program, inputs, args.machine, functional=not args.timing_only)
    _write_reports(args, result.report)
    if args.json:
        print(json.dumps(result.report.to_json(), indent=2))
        return 0
    print(f"program {program.name}: {program.instruction_count} instructions in "
          f"{len(program.streams)} streams")
    print(result.report.text())
    status = 0
    for name, golden in (reference or {}).items():
        got = result.outputs[name].astype(np.float64)
        error = np.abs(got - golden).max()
        scale = np.abs(golden).max() or 1.0
        ok = np.allclose(got, golden, rtol=1e-2, atol=1e-2 * scale)
        print(f"numerics {name}: max |error| {error:.3g} (max |value| {scale:.3g}) vs numpy: "
              f"{'PASS' if ok else 'FAIL'} (rtol 1e-2)")
        status = status or (0 if ok else 1)
    if args.outputs and not args.timing_only:
        np.savez(args.outputs, **result.outputs)
        print(f"outputs written to {args.outputs}")
    return status


def _model_options_given(args: argparse.Namespace) -> list[str]:
    flags = {"--batch": args.batch, "--seq": args.seq, "--layers": args.layers,
             "--image-size": args.image_size, "--tile": args.tile,
             "--partition": args.partition}
    given = [flag for flag, value in flags.items() if value is not None]
    given += ["--cores"] if args.cores != 1 else []
    given += ["--tensor-parallel"] if args.tensor_parallel != 1 else []
    return given + (["--packed"] if args.packed else [])


def cmd_run_model(args: argparse.Namespace) -> int:
    """Compile, lower and run a model; report latency, throughput, engines and operators."""
    from emulator.commands.compile import load_model, precision_of
    from emulator.model_runner import random_inputs, run_model, tile_layouts
    from kernels.graph import evaluate

    if args.what.endswith(".onnx") and not Path(args.what).is_file():
        print(f"ncemu run: no such ONNX file {args.what}", file=sys.stderr)
        return 2
    try:
        layouts = tile_layouts(args.tile)
    except ValueError as err:
        print(f"ncemu run: error: {err}", file=sys.stderr)
        return 2
    graph = load_model(args.what, args)
    inputs = _load_inputs(args.inputs) if args.inputs else None
    precision = precision_of(args)
    result = run_model(graph, inputs, args.machine, functional=not args.timing_only,
                       cores=args.cores, partition=args.partition, layouts=layouts,
                       precision=precision, progress=True, seed=args.seed,
                       tensor_parallel=args.tensor_parallel, packed=args.packed)
    report = result.report
    if args.trace:
        if report.run.schedule is None:
            raise ValueError("--trace writes one core's timeline; this run used several cores")
        _write_reports(args, report.run)
    lines, status = [], 0
    if not args.timing_only:
        # The same graph evaluated by the numpy reference at the same storage precision.
        feed = dict(inputs) if inputs else random_inputs(result.graph, args.seed)
        reference = evaluate(result.graph, feed, precision)
        tolerance = 1e-3 if precision == "fp32" else 5e-2
        for name, golden in reference.items():
            got = np.asarray(result.outputs[name], np.float64)
            golden = np.asarray(golden, np.float64)
            scale = np.abs(golden).max() or 1.0
            error = np.abs(got - golden).max()
            ok = error <= tolerance * scale
            lines.append(f"numerics {name}: max |error| {error:.3g} (max |value| {scale:.3g}) "
                         f"vs the numpy reference: {'PASS' if ok else 'FAIL'} (tolerance "
                         f"{tolerance:g} x max |value|)")
            status = status or (0 if ok else 1)
        if args.outputs:
            np.savez(args.outputs, **result.outputs)
            lines.append(f"outputs written to {args.outputs}")
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        for line in lines:
            print(line, file=sys.stderr)
        return status
    print(report.text())
    for line in lines:
        print(line)
    return status


def register(commands: argparse._SubParsersAction) -> None:
    run_parser = commands.add_parser(
        "run", help="run a built-in kernel or an assembly program and report",
        description="Run a program on an emulated NeuronCore, check its numbers, report.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    run_parser.add_argument("what", nargs="?", default=None,
                            help="a kernel of the library (see --list), 'tiled_matmul' (the "
                                 "default: the built-in hand-scheduled matmul), PROGRAM.nasm, "
                                 "a model (mlp, bert-base, bert-large, gpt2, gpt-small, "
                                 "resnet50, resnet18) or MODEL.onnx")
    run_parser.add_argument("--shape", default=None,
                            help="problem size: MxKxN (tiled_matmul, default 1024x512x1024, and "
                                 "matmul kernels) or KEY=VALUE,... (see --describe NAME)")
    run_parser.add_argument("--layout", default=None,
                            help="a library kernel's layout parameters, KEY=VALUE,...")
    run_parser.add_argument("--option", default=None,
                            help="a library kernel's options, KEY=VALUE,... (e.g. causal=1)")
    run_parser.add_argument("--list", action="store_true", help="list the runnable kernels")
    run_parser.add_argument("--describe", metavar="NAME",
                            help="a library kernel's operands, shapes, options and layouts")
    run_parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES),
                            help="operand dtype; for a model, the storage dtype of every float "
                                 "tensor (default bf16)")
    run_parser.add_argument("--machine", "--instance", dest="machine", default="inf2",
                            help="instance preset (inf2.xlarge, inf1.xlarge, trn1.2xlarge, ...; "
                                 "inf1/inf2/trn1 for short) or a machine .toml file; the "
                                 "program runs on one NeuronCore of it (a model on --cores of "
                                 "them; default inf2)")
    run_parser.add_argument("--inputs", help="an .npz of input tensors, by tensor name")
    run_parser.add_argument("--outputs", help="write the output tensors to this .npz")
    run_parser.add_argument("--seed", type=int, default=0, help="seed of random inputs")
    run_parser.add_argument("--json", action="store_true",
                            help="print the report as JSON (schema ncemu.report/1; "
                                 "ncemu.model_report/1 for a model) only")
    run_parser.add_argument("--trace", metavar="FILE",
                            help="write a Chrome/Perfetto trace (traceEvents JSON) to FILE")
    run_parser.add_argument("--roofline", metavar="FILE",
                            help="draw the run on the machine's roofline into a PNG")
    run_parser.add_argument("--timing-only", action="store_true",
                            help="time the program without computing any values")
    add_model_arguments(run_parser)
    group = run_parser.add_argument_group("tensor parallelism (BERT and GPT-2 layers)")
    group.add_argument("--tensor-parallel", type=int, default=1, metavar="N",
                       help="shard the transformer layers over N ranks (Megatron style: heads "
                            "and FFN columns split, all-reduces between ranks); one rank per "
                            "chip, so the all-reduces cross NeuronLink (default 1: no sharding)")
    group.add_argument("--packed", action="store_true",
                       help="with --tensor-parallel, put the ranks on the first N cores "
                            "instead of one per chip")
    run_parser.set_defaults(handler=cmd_run)
