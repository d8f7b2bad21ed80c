"""Tensor parallelism (Megatron style): one graph per rank, each computing its shard.

`tensor_parallel(graph, n)` rewrites the transformer layers of `graph` for `n` ranks:

* column-parallel: a matmul with a constant weight W [K, N] whose result (after a bias add,
  reshape, transpose) feeds attention (the Q/K/V projections) or an activation that feeds
  another constant-weight matmul (the first FFN linear).  Rank r keeps columns
  [r N/n, (r+1) N/n) of W and of the bias, so it computes heads/n of the heads;
* everything downstream of a sharded value runs on the shard (bias adds, activations, reshapes
  whose head count is divided by n, transposes, attention over the rank's heads);
* row-parallel: a constant-weight matmul whose input is sharded on its last axis (the attention
  output projection, the second FFN linear) keeps rows [r K/n, (r+1) K/n) of W and is followed
  by an `all_reduce` node (group_size n) summing the partial products; its bias is added after;
* everything else (embeddings, layernorms, residual adds) is replicated.

Weights are sliced from the graph's own seeded weights, so rank graphs compute exactly the
shards of the single-device model.  Each rank graph's `meta["tensor_parallel"]` holds
(rank, n); `meta["collective_ranks"]`, when given as `ranks`, tells the lowering which cores the
all-reduce spans (default 0..n-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import numpy as np

from kernels.graph.ir import Graph
from kernels.graph.tensor import GraphError, Value

ELEMENTWISE = ("add", "sub", "mul", "div")
ACTIVATIONS = ("gelu", "relu", "silu", "tanh", "sigmoid", "exp", "erf")


def _const_matmul(g: Graph, node: str) -> bool:
    if g.op(node).op != "matmul":
        return False
    w = g.inputs(node)[1]
    return g.is_constant(w) and g.type_of(w).ndim == 2


def _sole(g: Graph, value: Value) -> str | None:
    uses = g.consumers(value)
    if len(uses) != 1 or g.output_names(value):
        return None
    return uses[0][0]


def _is_column(g: Graph, node: str) -> bool:
    """Whether constant-weight matmul `node` starts a column-parallel region: its result flows
    (through a bias add, reshape, transpose) into attention, or into an activation feeding
    another constant-weight matmul."""
    value = Value(node)
    while (user := _sole(g, value)) is not None:
        op = g.op(user).op
        if op == "attention":
            return True
        if op in ACTIVATIONS:
            nxt = _sole(g, Value(user))
            return nxt is not None and _const_matmul(g, nxt)
        if op in ELEMENTWISE:
            others = [v for v in g.inputs(user) if v != value]
            if not all(g.is_constant(v) for v in others):
                return False
        elif op not in ("reshape", "transpose"):
            return False
        value = Value(user)
    return False


def _reshape_axis(in_shape: Sequence[int], out_shape: Sequence[int], axis: int) -> int:
    """The output axis of a reshape that starts where input axis `axis` starts."""
    before = prod(in_shape[:axis])
    for j in range(len(out_shape)):
        if prod(out_shape[:j]) == before and out_shape[j] != 1:
            return j
    raise GraphError(f"tensor_parallel: cannot follow axis {axis} of {tuple(in_shape)} through "
                     f"a reshape to {tuple(out_shape)}")


def _slice(value: np.ndarray, axis: int, rank: int, n: int) -> np.ndarray:
    size = value.shape[axis]
    if size % n:
        raise GraphError(f"tensor_parallel: dim {axis} of a {value.shape} weight does not "
                         f"divide by {n}")
    index = [slice(None)] * value.ndim
    index[axis] = slice(rank * size // n, (rank + 1) * size // n)
    return np.ascontiguousarray(value[tuple(index)])


def tensor_parallel(graph: Graph, n: int, ranks: Sequence[int] | None = None) -> list[Graph]:
    """One graph per rank (see the module docstring); `ranks` are the cores the all-reduces
    run over (recorded in each graph's meta for the lowering)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GraphError(f"tensor_parallel: n={n!r} must be a positive int")
    if ranks is not None and len(ranks) != n:
        raise GraphError(f"tensor_parallel: {len(ranks)} ranks given for n={n}")
    return [_rank_graph(graph, n, r, ranks) for r in range(n)]


def _rank_graph(graph: Graph, n: int, rank: int, ranks: Sequence[int] | None) -> Graph:
    g = Graph(graph.name if n == 1 else f"{graph.name}_tp{rank}of{n}", graph.seed)
    new: dict[Value, Value] = {}
    axis_of: dict[Value, int] = {}  # value -> the axis it is sharded on (absent: replicated)
    sliced: dict[tuple[str, int], Value] = {}
    found = 0

    def constant_slice(value: Value, axis: int) -> Value:
        key = (value.node, axis)
        if key not in sliced:
            t = graph.type_of(value)
            part = _slice(graph.constant_value(value.node), axis, rank, n)
            sliced[key] = g.add_constant(f"{value.node}.tp{rank}", part, t.dtype,
                                         graph.layer(value.node))
        return sliced[key]

    for node in graph.nodes:
        op = graph.op(node)
        ins = graph.inputs(node)
        out = Value(node)
        if op.op == "input":
            t = graph.types(node)[0]
            new[out] = g.input(node, t.shape, t.dtype)
            continue
        if op.op == "constant":
            g._add(node, op, ())  # the same (lazily generated) weight, unsliced
            g._constants[node] = graph.constant_source(node)
            g.nx.nodes[node]["layer"] = graph.layer(node)
            new[out] = out
            continue
        sharded = [axis_of.get(v) for v in ins]
        args = [new[v] for v in ins]
        attrs = dict(op.attrs)
        result_axis: int | None = None
        all_reduce = False
        if n > 1 and _const_matmul(graph, node) and sharded[0] is not None:
            if sharded[0] != graph.type_of(ins[0]).ndim - 1:
                raise GraphError(f"tensor_parallel: matmul input sharded on axis {sharded[0]}",
                                 node)
            args[1] = constant_slice(ins[1], 0)  # row parallel
            all_reduce = True
        elif n > 1 and _const_matmul(graph, node) and _is_column(graph, node):
            args[1] = constant_slice(ins[1], 1)  # column parallel
            result_axis = graph.types(node)[0].ndim - 1
            found += 1
        elif any(a is not None for a in sharded):
            result_axis = _sharded_op(graph, node, ins, sharded, args, attrs, constant_slice,
                                      n)
        value = g.apply(op.op, *args, name=node, **attrs)
        g.nx.nodes[node]["layer"] = graph.layer(node)
        if all_reduce:
            value = g.apply("all_reduce", value, name=f"{node}.all_reduce", group_size=n)
            g.nx.nodes[value.node]["layer"] = graph.layer(node)
        for port in range(len(graph.types(node))):
            new[Value(node, port)] = Value(value.node, port)
            if result_axis is not None:
                axis_of[Value(node, port)] = result_axis
    for name, value in graph.outputs.items():
        if value in axis_of:
            raise GraphError(f"tensor_parallel: output {name} is still sharded", value.node)
        g.output(name, new[value])
    if n > 1 and not found:
        raise GraphError(f"tensor_parallel: graph {graph.name} has no column-parallel matmul "
                         f"(no attention projections or FFN found to shard)")
    g.meta = dict(graph.meta)
    g.meta["tensor_parallel"] = (rank, n)
    if ranks is not None:
        g.meta["collective_ranks"] = tuple(int(r) for r in ranks)
    return g


def _sharded_op(graph: Graph, node: str, ins: Sequence[Value], sharded: list[int | None],
                args: list[Value], attrs: dict, constant_slice, n: int) -> int:
    """Rewrite a non-matmul node with a sharded input; the axis its result is sharded on."""
    op = graph.op(node)
    out_t = graph.types(node)[0]
    if op.op in ELEMENTWISE:
        axis = next(a for a in sharded if a is not None)
        if axis != out_t.ndim - 1:
            raise GraphError(f"tensor_parallel: ({op.op}) sharded on axis {axis}", node)
        for k, (v, a) in enumerate(zip(ins, sharded)):
            if a is not None:
                continue
            t = graph.type_of(v)
            if t.ndim == 0 or t.shape[-1] == 1:
                continue  # a broadcast scalar/column applies to every shard
            if not graph.is_constant(v):
                raise GraphError(f"tensor_parallel: ({op.op}) mixes a sharded value with "
                                 f"replicated {v}", node)
            args[k] = constant_slice(v, t.ndim - 1)
        return axis
    if op.op in ACTIVATIONS:
        return sharded[0]
    if op.op == "transpose":
        return tuple(op.perm).index(sharded[0])
    if op.op == "reshape":
        in_shape = graph.type_of(ins[0]).shape
        j = _reshape_axis(in_shape, out_t.shape, sharded[0])
        shape = list(op.shape)
        if shape[j] != -1:
            if shape[j] % n:
                raise GraphError(f"tensor_parallel: reshape dim {shape[j]} does not divide by "
                                 f"{n}", node)
            shape[j] //= n
        attrs["shape"] = tuple(shape)
        return j
    if op.op == "attention":
        if any(a is None for a in sharded[:3]) or len(set(sharded[:3])) != 1:
            raise GraphError("tensor_parallel: (attention) q, k and v must all be sharded by "
                             "heads", node)
        if len(sharded) > 3 and sharded[3] is not None:
            raise GraphError("tensor_parallel: (attention) sharded mask", node)
        return sharded[0]
    raise GraphError(f"tensor_parallel: cannot run ({op.op}) on a sharded input", node)
