"""The graph compiler: a named, ordered list of small graph -> graph passes with the IR check
(`check.check`) run on the input and after every pass (tinygrad's `full_rewrite_to_sink` shape).

`compile(graph, target, ...)` runs them all; `passes()` names them; `format_passes()` prints the
list for a CLI; `dump_after` prints the graph (text or JSON) after chosen passes.  The last pass,
`lower`, hands the annotated graph to a `lowering(graph, target)` callable (the kernel library's
job) and keeps what it returns in `graph.meta["lowered"]`; without one it is skipped.  The
compiler never sees the emulator: a tile choice by measurement comes in as a `cost` callable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

from isa.dtypes import dtype
from isa.target import Target
from isa.target import target as resolve_target
from kernels.graph.check import check
from kernels.graph.fusion import fuse
from kernels.graph.ir import Graph
from kernels.graph.layout import CostFn, WorkingSet, choose_layout, working_set
from kernels.graph.partition import partition_data, partition_pipeline
from kernels.graph.placement import place_hbm
from kernels.graph.rewrite import fold_constants, infer_types, prune, set_precision
from kernels.graph.tensor import GraphError

Lowering = Callable[[Graph, Target], object]
PARTITIONS = (None, "data", "pipeline")


@dataclass(frozen=True)
class CompileOptions:
    """What the passes may be told: storage precision, a layout cost callable, how to partition
    over `cores`, which inputs carry the batch (data parallel; all inputs if None), a lowering."""

    precision: str | None = None
    cost: CostFn | None = None
    cores: int = 1
    partition: str | None = None
    batch_inputs: tuple[str, ...] | None = None
    lowering: Lowering | None = None

    def __post_init__(self) -> None:
        if self.precision is not None and not dtype(self.precision).is_float:
            raise GraphError(f"precision {self.precision!r} must be a float dtype")
        if isinstance(self.cores, bool) or not isinstance(self.cores, int) or self.cores < 1:
            raise GraphError(f"cores={self.cores!r} must be a positive int")
        if self.partition not in PARTITIONS:
            raise GraphError(f"partition={self.partition!r} must be one of {PARTITIONS}")
        if self.partition is not None and self.cores < 2:
            raise GraphError(f"partition={self.partition!r} needs cores >= 2")
        if self.batch_inputs is not None:
            object.__setattr__(self, "batch_inputs", tuple(self.batch_inputs))


@dataclass(frozen=True)
class PassContext:
    target: Target
    options: CompileOptions


# ---- the passes -------------------------------------------------------------------------------
def _infer(g: Graph, ctx: PassContext) -> Graph:
    return infer_types(g)


def _fold(g: Graph, ctx: PassContext) -> Graph:
    return fold_constants(g)


def _fusion(g: Graph, ctx: PassContext) -> Graph:
    return fuse(g)


def _prune(g: Graph, ctx: PassContext) -> Graph:
    return prune(g)


def _precision(g: Graph, ctx: PassContext) -> Graph:
    return g if ctx.options.precision is None else set_precision(g, ctx.options.precision)


def _layout(g: Graph, ctx: PassContext) -> Graph:
    g = g.copy()
    for node in g.nodes:
        layout = choose_layout(g, node, ctx.target, ctx.options.cost)
        if layout is not None:
            g.annotate(node, "layout", layout)
    return g


def _budget(g: Graph, ctx: PassContext) -> Graph:
    g = g.copy()
    t = ctx.target
    for node in g.nodes:
        layout = g.annotations(node).get("layout")
        if layout is None:
            continue
        ws: WorkingSet = working_set(g, node, layout.tiles)
        if ws.sbuf_bytes > t.sbuf_partition_bytes:
            raise GraphError(f"({g.op(node).op}) working set of {layout} needs {ws.sbuf_bytes} "
                             f"bytes of SBUF per partition; {t.name} has "
                             f"{t.sbuf_partition_bytes}", node)
        if ws.psum_bytes > t.psum_partition_bytes:
            raise GraphError(f"({g.op(node).op}) working set of {layout} needs {ws.psum_bytes} "
                             f"bytes of PSUM per partition; {t.name} has "
                             f"{t.psum_partition_bytes}", node)
        g.annotate(node, "working_set", ws)
    return g


def _partition(g: Graph, ctx: PassContext) -> Graph:
    o = ctx.options
    if o.partition == "data":
        return partition_data(g, o.cores, o.batch_inputs)
    if o.partition == "pipeline":
        return partition_pipeline(g, o.cores)
    return g


def _hbm(g: Graph, ctx: PassContext) -> Graph:
    return place_hbm(g)


def _lower(g: Graph, ctx: PassContext) -> Graph:
    if ctx.options.lowering is None:
        return g
    g = g.copy()
    g.meta["lowered"] = ctx.options.lowering(g, ctx.target)
    return g


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Graph, PassContext], Graph]
    summary: str


PASSES: tuple[Pass, ...] = (
    Pass("infer", _infer, "re-infer every tensor's shape and dtype from the inputs"),
    Pass("fold_constants", _fold, "evaluate operators whose inputs are all constants"),
    Pass("fusion", _fusion, "matmul+bias+activation -> linear; add+layernorm -> add_layernorm"),
    Pass("prune", _prune, "remove nodes no output depends on"),
    Pass("precision", _precision, "store float tensors in options.precision (if given)"),
    Pass("layout", _layout, "tile sizes per node: user request, else cost callable, else rule"),
    Pass("budget", _budget, "each node's tiles fit SBUF and PSUM per partition"),
    Pass("partition", _partition, "data-parallel or pipeline annotations over options.cores"),
    Pass("hbm_placement", _hbm, "HBM offsets by linear scan with liveness-based reuse"),
    Pass("lower", _lower, "options.lowering(graph, target) -> meta['lowered'] (skipped if None)"),
)
_BY_NAME = {p.name: p for p in PASSES}


def passes() -> list[str]:
    """The pass names, in the order `compile` runs them."""
    return [p.name for p in PASSES]


def format_passes() -> str:
    width = max(len(p.name) for p in PASSES)
    return "\n".join(f"{i:2d}. {p.name:<{width}}  {p.summary}" for i, p in enumerate(PASSES, 1))


def _pass_names(names: str | Iterable[str] | None, what: str) -> set[str]:
    if names is None:
        return set()
    if names == "all":
        return set(_BY_NAME)
    chosen = {names} if isinstance(names, str) else set(names)
    unknown = sorted(chosen - set(_BY_NAME))
    if unknown:
        raise GraphError(f"{what}: unknown pass(es) {', '.join(unknown)}; passes: "
                         f"{', '.join(_BY_NAME)}")
    return chosen


def run_pass(name: str, graph: Graph, target: Target | str = "inf2",
             options: CompileOptions | None = None) -> Graph:
    """Run one pass by name, then the IR check."""
    _pass_names(name, "run_pass")
    ctx = PassContext(resolve_target(target), options or CompileOptions())
    out = _BY_NAME[name].run(graph, ctx)
    _checked(out, ctx.target, name)
    return out


def _checked(graph: Graph, target: Target, after: str) -> None:
    try:
        check(graph, target)
    except GraphError as err:
        raise err.prefixed(after) from None


def compile(graph: Graph, target: Target | str = "inf2", *,
            options: CompileOptions | None = None, dump_after: str | Sequence[str] | None = None,
            dump_format: str = "text", dump: TextIO | None = None,
            stop_after: str | None = None, **option_values: object) -> Graph:
    """Run the passes on `graph` for `target`; the compiled (annotated) graph.

    Options come as `options=CompileOptions(...)` or as keywords (`cores=2, partition="data"`).
    `dump_after` names passes (or "all") after which the graph is written to `dump` (stdout by
    default) as text or JSON; `stop_after` ends the pipeline early.
    """
    if options is not None and option_values:
        raise GraphError("give options either as CompileOptions or as keywords, not both")
    options = options or CompileOptions(**option_values)
    dumps = _pass_names(dump_after, "dump_after")
    stop = _pass_names(stop_after, "stop_after")
    if dump_format not in ("text", "json"):
        raise GraphError(f"dump_format={dump_format!r} must be text or json")
    ctx = PassContext(resolve_target(target), options)
    _checked(graph, ctx.target, "input graph")
    g, ran = graph, []
    for p in PASSES:
        try:
            g = p.run(g, ctx)
        except GraphError as err:
            raise err.prefixed(f"pass {p.name}") from None
        _checked(g, ctx.target, f"after pass {p.name}")
        ran.append(p.name)
        if p.name in dumps:
            out = dump or sys.stdout
            text = g.format() if dump_format == "text" else json.dumps(g.to_json(), indent=1)
            out.write(f"--- after {p.name}\n{text}\n")
        if p.name in stop:
            break
    g.meta["passes"] = tuple(ran)
    return g
