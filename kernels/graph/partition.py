"""Partitioning annotations across the NeuronCores of a chip.

* Data parallel (`partition_data`): every core runs the same graph on 1/cores of the batch.  The
  per-core graph (`shard_graph`) is the graph with each batch input's axis 0 divided by the core
  count and its types re-inferred; comparing it with the whole graph tells which axis of every
  tensor is split (or that it is replicated, as weights are).  An operator that would mix samples
  along the split axis (a softmax over it, a matmul contracting it, a reshape moving it inward)
  is an error naming the node.
* Pipeline (`partition_pipeline`): the layers (a node's outermost builder scope; an unscoped node
  is a layer of its own) in topological order are cut into `stages` consecutive groups that
  minimise the largest stage's FLOPs; stage s runs on core s.  Constants and inputs live with the
  stages that read them; the tensors crossing a cut are listed with their bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod

import networkx as nx

from kernels.graph.ir import Graph
from kernels.graph.ops import OPS, Operator
from kernels.graph.rewrite import infer_types
from kernels.graph.tensor import GraphError, TensorType

Axes = tuple[int | None, ...]


@dataclass(frozen=True)
class DataShard:
    """Data-parallel placement of a node: the axis of each output split across `cores`."""

    cores: int
    axes: Axes  # per output: the split axis, or None when every core holds all of it

    def __str__(self) -> str:
        axes = ",".join("rep" if a is None else str(a) for a in self.axes)
        return f"data x{self.cores} split({axes})"


@dataclass(frozen=True)
class PipelineStage:
    """Pipeline placement: the stage that computes the node, and the cores holding its value."""

    stage: int
    stages: int
    cores: tuple[int, ...]

    def __str__(self) -> str:
        return f"stage {self.stage}/{self.stages} on cores {self.cores}"


@dataclass(frozen=True)
class Transfer:
    """A tensor sent from one pipeline stage to another."""

    tensor: str
    src: int
    dst: int
    nbytes: int


@dataclass(frozen=True)
class PipelinePlan:
    stage_flops: tuple[int, ...]
    stage_layers: tuple[tuple[str, ...], ...]
    transfers: tuple[Transfer, ...]

    def __str__(self) -> str:
        return (f"{len(self.stage_flops)} stages, GFLOPs "
                f"{', '.join(f'{f / 1e9:.3g}' for f in self.stage_flops)}, "
                f"{len(self.transfers)} transfers")


# ---- data parallel ----------------------------------------------------------------------------
def _batch_inputs(graph: Graph, batch_inputs: Sequence[str] | None) -> list[str]:
    names = list(graph.graph_inputs) if batch_inputs is None else list(batch_inputs)
    for name in names:
        if name not in graph.graph_inputs:
            raise GraphError("is not a graph input (batch_inputs)", name)
    return names


def shard_graph(graph: Graph, cores: int, batch_inputs: Sequence[str] | None = None) -> Graph:
    """The graph one core runs under data parallelism: batch inputs' axis 0 divided by cores."""
    if cores < 1:
        raise GraphError(f"cores={cores} must be >= 1")
    g = graph
    for name in _batch_inputs(graph, batch_inputs):
        t = graph.graph_inputs[name]
        if t.ndim == 0 or t.shape[0] % cores:
            raise GraphError(f"batch axis 0 of {t} does not divide over {cores} cores", name)
        g = g.with_input(name, (t.shape[0] // cores,) + t.shape[1:])
    try:
        return infer_types(g)
    except GraphError as err:
        raise err.prefixed(f"data-parallel over {cores} cores") from None


def _split_axis(node: str, port: int, whole: TensorType, part: TensorType,
                cores: int) -> int | None:
    changed = [i for i, (a, b) in enumerate(zip(whole.shape, part.shape)) if a != b]
    if whole.ndim != part.ndim or len(changed) > 1 or (
            changed and whole.shape[changed[0]] != part.shape[changed[0]] * cores):
        raise GraphError(f"output {port} is {whole} whole but {part} per core: not one axis "
                         f"split {cores} ways", node)
    return changed[0] if changed else None


# Axes of each input an op mixes (reduces or contracts over, or reorders); a split there is an
# error.  Each returns a message if the split `in_axes` mixes samples, else None.
Mixing = Callable[[Operator, tuple[TensorType, ...], Axes, Axes, tuple[TensorType, ...]],
                  str | None]


def _none(op, ins, in_axes, out_axes, outs) -> str | None:
    return None


def _forbid(rule: Callable[[Operator, tuple[TensorType, ...]],
                            dict[int, set[int] | None]]) -> Mixing:
    """A mixing check from {input index: axes that must not be split, or None for "no axis"}."""
    def mixing(op, ins, in_axes, out_axes, outs):
        banned = rule(op, ins)
        for i, axis in enumerate(in_axes):
            if axis is not None and i in banned and (banned[i] is None or axis in banned[i]):
                return f"input {i} is split along axis {axis}, which {op.op} mixes"
        return None
    return mixing


def _unsplit(*indices: int) -> dict[int, set[int] | None]:
    """Inputs (weights, scales) that must not be split at all."""
    return {i: None for i in indices}


def _last(t: TensorType) -> set[int]:
    return {t.ndim - 1}


def _axis_of(t: TensorType, axis: int) -> set[int]:
    return {axis % t.ndim}


def _reshape_mixing(op, ins, in_axes, out_axes, outs) -> str | None:
    (a,), (b,) = in_axes, out_axes
    if a is None:
        return None
    if b is None or prod(ins[0].shape[:a]) != prod(outs[0].shape[:b]):
        return f"reshape moves the split axis {a} of {ins[0]} inside another axis of {outs[0]}"
    return None


_MATMUL = _forbid(lambda op, ins: {0: _last(ins[0]), **_unsplit(1, 2)})
_NORM = _forbid(lambda op, ins: {0: _last(ins[0]), **_unsplit(1, 2)})
_IMAGE = _forbid(lambda op, ins: {0: {1, 2, 3}, **_unsplit(1, 2)})
_AXIS = _forbid(lambda op, ins: {0: _axis_of(ins[0], op.axis)})

MIXING: dict[str, Mixing] = {
    "input": _none, "constant": _none,
    "matmul": _MATMUL, "linear": _MATMUL,
    "batch_matmul": _forbid(lambda op, ins: {
        0: _last(ins[0]), 1: {ins[1].ndim - (1 if op.transpose_b else 2)}}),
    "conv2d": _IMAGE, "maxpool2d": _IMAGE, "avgpool2d": _IMAGE, "global_avgpool": _IMAGE,
    "attention": _forbid(lambda op, ins: {i: {t.ndim - 2, t.ndim - 1} for i, t in
                                          enumerate(ins)}),
    "add": _none, "sub": _none, "mul": _none, "div": _none, "relu": _none, "gelu": _none,
    "silu": _none, "tanh": _none, "sigmoid": _none, "exp": _none, "erf": _none,
    "softmax": _AXIS,
    "layernorm": _NORM, "rmsnorm": _NORM,
    "add_layernorm": _forbid(lambda op, ins: {0: _last(ins[0]), 1: _last(ins[1]),
                                              **_unsplit(2, 3)}),
    "reshape": _reshape_mixing, "transpose": _none,
    "concat": _forbid(lambda op, ins: {i: _axis_of(t, op.axis) for i, t in enumerate(ins)}),
    "split": _AXIS, "slice": _forbid(lambda op, ins: {0: {a % ins[0].ndim for a in op.axes}}),
    "gather": _forbid(lambda op, ins: {0: _axis_of(ins[0], op.axis)}),
    "all_reduce": _none, "all_gather": _AXIS, "reduce_scatter": _AXIS,
}


def partition_data(graph: Graph, cores: int, batch_inputs: Sequence[str] | None = None) -> Graph:
    """Annotate every node with the axis of each output split over `cores` (data parallel)."""
    part = shard_graph(graph, cores, batch_inputs)
    g = graph.copy()
    axes_of: dict[str, Axes] = {}
    for node in g.nodes:
        op = g.op(node)
        whole, per_core = g.types(node), part.types(node)
        axes = tuple(_split_axis(node, p, w, c, cores)
                     for p, (w, c) in enumerate(zip(whole, per_core)))
        in_axes = tuple(axes_of[v.node][v.port] for v in g.inputs(node))
        problem = MIXING[op.op](op, g.input_types(node), in_axes, axes, whole)
        if problem:
            raise GraphError(f"({op.op}) cannot run data parallel: {problem}", node)
        axes_of[node] = axes
        g.annotate(node, "partition", DataShard(cores, axes))
    g.meta["partition"] = f"data parallel over {cores} cores"
    return g


# ---- pipeline ---------------------------------------------------------------------------------
def _linear_partition(weights: list[int], parts: int) -> list[int]:
    """Cut points splitting `weights` into `parts` consecutive non-empty groups, minimising the
    largest group sum (dynamic programming over prefix sums)."""
    n = len(weights)
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for p in range(1, parts + 1):
        for end in range(p, n + 1):
            for start in range(p - 1, end):
                cost = max(best[p - 1][start], prefix[end] - prefix[start])
                if cost < best[p][end]:
                    best[p][end], cut[p][end] = cost, start
    bounds, end = [], n
    for p in range(parts, 0, -1):
        bounds.append(end)
        end = cut[p][end]
    return list(reversed(bounds))  # exclusive end of each group


def partition_pipeline(graph: Graph, stages: int) -> Graph:
    """Assign consecutive layers to `stages` cores, balancing FLOPs."""
    g = graph.copy()
    computes = [n for n in g.nodes if OPS[g.op(n).op].reference is not None]
    group_of = {n: g.layer(n) or f"~{n}" for n in computes}
    layers = nx.DiGraph()
    layers.add_nodes_from(dict.fromkeys(group_of[n] for n in computes))
    for u, v in g.nx.edges():
        if u in group_of and group_of[u] != group_of[v]:
            layers.add_edge(group_of[u], group_of[v])
    first = {layer: i for i, layer in enumerate(layers.nodes)}
    try:
        order = list(nx.lexicographical_topological_sort(layers, key=first.__getitem__))
    except nx.NetworkXUnfeasible:
        u, v = nx.find_cycle(layers)[0]
        raise GraphError(f"layers {u} and {v} depend on each other; pipeline stages need "
                         "layers in a chain") from None
    if len(order) < stages:
        raise GraphError(f"pipeline: {len(order)} layers cannot fill {stages} stages")
    flops = {layer: 0 for layer in order}
    for n in computes:
        flops[group_of[n]] += g.flops(n)
    bounds = _linear_partition([flops[layer] for layer in order], stages)
    stage_of_layer, start = {}, 0
    for s, end in enumerate(bounds):
        for layer in order[start:end]:
            stage_of_layer[layer] = s
        start = end
    stage_of = {n: stage_of_layer[group_of[n]] for n in computes}
    for n in g.nodes:
        if n in stage_of:
            g.annotate(n, "partition", PipelineStage(stage_of[n], stages, (stage_of[n],)))
        else:  # a source lives on every stage that reads it
            readers = sorted({stage_of[v] for _, v in g.nx.out_edges(n) if v in stage_of})
            home = readers[0] if readers else 0
            g.annotate(n, "partition", PipelineStage(home, stages, tuple(readers) or (0,)))
    transfers = {}
    for u, v, data in g.nx.edges(data=True):
        if u in stage_of and stage_of[u] != stage_of[v]:
            key = (f"{u}:{data['port']}" if data["port"] else u, stage_of[u], stage_of[v])
            transfers[key] = Transfer(*key, data["type"].nbytes)
    stage_flops = [0] * stages
    for n in computes:
        stage_flops[stage_of[n]] += g.flops(n)
    g.meta["partition"] = PipelinePlan(
        tuple(stage_flops),
        tuple(tuple(layer for layer in order if stage_of_layer[layer] == s)
              for s in range(stages)),
        tuple(sorted(transfers.values(), key=lambda t: (t.src, t.dst, t.tensor))))
    return g
