"""`ncemu compile`: compile a model's operator graph for a machine and show what the passes did.

    ncemu compile --list-passes              the compiler's passes, in order
    ncemu compile bert-base --layers 2       pass list, then per node the kernels it became
    ncemu compile resnet18 --dump-after fusion      the graph after the fusion pass
    ncemu compile gpt2 --dump-after all --json      every pass's graph and the lowering as JSON
    ncemu compile model.onnx --tile fc0/linear:tile_n=128

MODEL is a built-in model (mlp, bert-base, bert-large, gpt2 / gpt-small, resnet50, resnet18) or
an ONNX file; the model options (--batch, --seq, --layers, --image-size, --tile, --cores,
--partition) are the same as `ncemu run MODEL`'s.
"""

from __future__ import annotations

import argparse
import json
import sys

from isa.dtypes import DTYPES

DUMP_CHOICES = ("infer", "fold_constants", "fusion", "prune", "precision", "layout", "budget",
                "partition", "hbm_placement", "lower", "all")


def is_model(what: str | None) -> bool:
    """Whether `ncemu run WHAT` names a model (a builder or an .onnx file)."""
    from emulator.model_runner import MODELS

    return what is not None and (what in MODELS or what.endswith(".onnx"))


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that size and place a model (shared by `ncemu run MODEL`)."""
    group = parser.add_argument_group("model options (a built-in model or an .onnx file)")
    group.add_argument("--batch", type=int, default=None,
                       help="inferences per run: axis 0 of every model input (default: the "
                            "model's own, 1 for BERT/GPT/ResNet, 8 for the MLP)")
    group.add_argument("--seq", type=int, default=None,
                       help="sequence length of BERT / GPT-2 (default 128)")
    group.add_argument("--layers", type=int, default=None,
                       help="encoder / decoder layers of BERT / GPT-2 (default the model's)")
    group.add_argument("--image-size", type=int, default=None,
                       help="image height and width of ResNet (default 224)")
    group.add_argument("--tile", action="append", default=None, metavar="NODE:KEY=VAL",
                       help="override one tile parameter of one node's layout (repeatable), "
                            "e.g. --tile layer0/intermediate:tile_n=256; `ncemu compile MODEL` "
                            "lists the nodes and their tiles")
    group.add_argument("--cores", type=int, default=1,
                       help="NeuronCores to run on (default 1); more than one runs data "
                            "parallel unless --partition says otherwise")
    group.add_argument("--partition", choices=("data", "pipeline"), default=None,
                       help="how to use several cores: data (each core a slice of the batch) "
                            "or pipeline (consecutive layers per core, send/recv between them)")


def model_sizes(args: argparse.Namespace) -> dict:
    return {"batch": args.batch, "seq": args.seq, "layers": args.layers,
            "image_size": args.image_size}


def load_model(what: str, args: argparse.Namespace):
    """The graph of a built-in model or an ONNX file, sized by the command's options."""
    from emulator.model_runner import build_model, prepare
    from kernels.graph.tensor import GraphError

    sizes = model_sizes(args)
    if what.endswith(".onnx"):
        from kernels.graph.onnx_import import load_onnx

        extra = sorted(k for k, v in sizes.items() if v is not None and k != "batch")
        if extra:
            raise GraphError(f"an ONNX model takes no {', '.join(extra)} (only --batch)")
        return prepare(load_onnx(what), args.batch)
    return build_model(what, **sizes)


def precision_of(args: argparse.Namespace) -> str:
    from isa.dtypes import dtype

    if not dtype(args.dtype).is_float:
        raise ValueError(f"--dtype {args.dtype} must be a float dtype for a model")
    return args.dtype


def cmd_compile(args: argparse.Namespace) -> int:
    from emulator.model_runner import MODELS, compile_model, prepare, tile_layouts
    from emulator.runner import resolve_instance
    from kernels.graph.compiler import format_passes

    if args.list_passes:
        print(format_passes())
        return 0
    if args.model is None:
        print("ncemu compile: error: give a MODEL (or --list-passes); models: "
              f"{', '.join(MODELS)} or an .onnx file", file=sys.stderr)
        return 2
    if not is_model(args.model):
        print(f"ncemu compile: error: unknown model {args.model!r}; models: "
              f"{', '.join(MODELS)} or an .onnx file", file=sys.stderr)
        return 2
    try:
        layouts = tile_layouts(args.tile)
    except ValueError as err:
        print(f"ncemu compile: error: {err}", file=sys.stderr)
        return 2
    graph = prepare(load_model(args.model, args), None, layouts)
    instance = resolve_instance(args.machine)
    dumps = {"all": set(DUMP_CHOICES)}.get(args.dump_after, {args.dump_after})
    dumped: dict[str, dict] = {}

    def dump(name: str, g) -> None:
        if name not in dumps:
            return
        if args.json:
            dumped[name] = g.to_json()
        else:
            print(f"--- after {name}\n{g.format()}")

    partition = args.partition or ("data" if args.cores > 1 else None)
    if not args.json:
        print(f"passes:\n{format_passes()}")
    compiled, wall = compile_model(graph, instance, precision=precision_of(args),
                                   cores=args.cores, partition=partition,
                                   progress=sys.stderr if args.progress else None, dump=dump)
    lowered = compiled.meta["lowered"]
    if args.json:
        print(json.dumps({"schema": "ncemu.compile/1", "model": compiled.name,
                          "machine": instance.name, "passes": list(compiled.meta["passes"]),
                          "dumps": dumped, "lowered": lowered.to_json(), "wall_s": wall},
                         indent=1))
        return 0
    print(lowered.summary())
    print(f"compiled in {wall['compile_s']:.2f} s, lowered (traced) in {wall['trace_s']:.2f} s")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compile", help="compile a model's operator graph and show the passes' results",
        description="Compile a model (built-in or ONNX) for a machine: the pass list, the "
                    "graph after a chosen pass, and the kernels every node became.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("model", nargs="?", default=None,
                        help="mlp, bert-base, bert-large, gpt2 (gpt-small), resnet50, resnet18, "
                             "or FILE.onnx")
    parser.add_argument("--list-passes", action="store_true",
                        help="print the compiler's passes in order and exit")
    parser.add_argument("--dump-after", choices=DUMP_CHOICES, default=None, metavar="PASS",
                        help="print the graph after this pass (or 'all'); passes: "
                             + ", ".join(DUMP_CHOICES[:-1]))
    parser.add_argument("--json", action="store_true",
                        help="print the passes, the dumped graphs and the lowering as JSON")
    parser.add_argument("--machine", "--instance", dest="machine", default="inf2",
                        help="instance preset whose NeuronCore the graph is compiled for "
                             "(inf2.xlarge, inf1.xlarge, trn1.2xlarge, ...; default inf2)")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES),
                        help="storage dtype of every float tensor (default bf16)")
    parser.add_argument("--progress", action="store_true",
                        help="print a progress line per pass and per 10%% of nodes lowered on "
                             "stderr")
    add_model_arguments(parser)
    parser.set_defaults(handler=cmd_compile)
