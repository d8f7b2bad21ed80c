"""The IR check run between compiler passes: is this graph well formed, and legal on a target?

Checked: every node holds a known operator with attributes its schema accepts; no cycles; every
input of every node connected exactly once to an existing output; edge types equal their
producer's output types; recorded output types equal what inference gives from the inputs (shape
and dtype); dtypes are `isa` dtypes; constants hold values of their type's shape; outputs exist;
on the target, every dimension is positive and each layout annotation respects the target's
tile limits.  The first problem raises a `GraphError` naming the node and what is wrong.
"""

from __future__ import annotations

import networkx as nx

from isa.dtypes import DTYPES, DType
from isa.target import Target
from isa.target import target as resolve_target
from kernels.graph.ir import Graph, RandomInit
from kernels.graph.layout import Layout, layout_violations
from kernels.graph.ops import OPS, Operator
from kernels.graph.tensor import GraphError, TensorType, Value


def _check_record(node: str, data: dict) -> Operator:
    op = data.get("op")
    if not isinstance(op, Operator):
        raise GraphError(f"holds {op!r}, not an operator record", node)
    if op.op not in OPS:
        raise GraphError(f"unknown operator {op.op!r}", node)
    try:
        renormalized = Operator(op.op, dict(op.attrs))
    except GraphError as err:
        raise GraphError(f"({op.op}) {err}", node) from None
    if renormalized != op:
        raise GraphError(f"({op.op}) attributes {op.attrs} are not in normal form", node)
    return op


def _check_types(node: str, op: Operator, types: object) -> tuple[TensorType, ...]:
    if not isinstance(types, tuple) or not all(isinstance(t, TensorType) for t in types):
        raise GraphError(f"({op.op}) output types {types!r} are not a tuple of TensorType", node)
    for t in types:
        if not isinstance(t.dtype, DType) or DTYPES.get(t.dtype.name) is not t.dtype:
            raise GraphError(f"({op.op}) output dtype {t.dtype!r} is not a known dtype", node)
    return types


def _check_cycles(graph: Graph) -> None:
    if not nx.is_directed_acyclic_graph(graph.nx):
        cycle = nx.find_cycle(graph.nx)
        path = " -> ".join([str(u) for u, *_ in cycle] + [str(cycle[0][0])])
        raise GraphError(f"is on a cycle: {path}", cycle[0][0])


def _check_edges(graph: Graph, node: str, op: Operator) -> tuple[Value, ...]:
    edges = list(graph.nx.in_edges(node, keys=True, data=True))
    keys = sorted(k for _, _, k, _ in edges)
    if keys != list(range(len(edges))):
        raise GraphError(f"({op.op}) input slots {keys} are not 0..{len(edges) - 1}, each once",
                         node)
    try:
        OPS[op.op].check_arity(len(edges))
    except GraphError as err:
        raise GraphError(f"({op.op}) {err}", node) from None
    for u, _, k, data in edges:
        port, carried = data.get("port"), data.get("type")
        produced = graph.types(u)
        if not isinstance(port, int) or not 0 <= port < len(produced):
            raise GraphError(f"({op.op}) input {k} reads output {port!r} of {u}, which has "
                             f"{len(produced)} outputs", node)
        if carried != produced[port]:
            raise GraphError(f"({op.op}) input {k} edge from {Value(u, port)} carries {carried} "
                             f"but {u} produces {produced[port]}", node)
    return tuple(Value(u, data["port"]) for u, _, _, data in sorted(edges, key=lambda e: e[2]))


def _check_inference(graph: Graph, node: str, op: Operator, inputs: tuple[Value, ...],
                     types: tuple[TensorType, ...]) -> None:
    spec = OPS[op.op]
    in_types = tuple(graph.type_of(v) for v in inputs)
    try:
        inferred = spec.infer(op, in_types)
    except GraphError as err:
        raise GraphError(f"({op.op}) {err}", node) from None
    if len(inferred) != len(types):
        raise GraphError(f"({op.op}) records {len(types)} outputs, inference gives "
                         f"{len(inferred)}", node)
    for port, (want, have) in enumerate(zip(inferred, types)):
        if want.shape != have.shape:
            raise GraphError(f"({op.op}) shape mismatch: output {port} is recorded as {have} "
                             f"but inference from ({', '.join(map(str, in_types))}) gives "
                             f"{want}", node)
        if want.dtype != have.dtype:
            raise GraphError(f"({op.op}) dtype mismatch: output {port} is recorded as {have} "
                             f"but inference gives {want}", node)


def _check_constant(graph: Graph, node: str, t: TensorType) -> None:
    source = graph.constant_source(node)
    if isinstance(source, RandomInit):
        return
    if source.shape != t.shape:
        raise GraphError(f"(constant) holds a value of shape {source.shape}, typed {t}", node)
    if (source.dtype.kind == "f") != t.dtype.is_float:
        raise GraphError(f"(constant) holds {source.dtype} values, typed {t}", node)


def _check_target(graph: Graph, node: str, op: Operator, types: tuple[TensorType, ...],
                  target: Target) -> None:
    for port, t in enumerate(types):
        if any(d < 1 for d in t.shape):
            raise GraphError(f"({op.op}) output {port} {t} has a dimension < 1; tensors on "
                             f"{target.name} must be non-empty", node)
    layout = graph.annotations(node).get("layout")
    if layout is not None:
        if not isinstance(layout, Layout):
            raise GraphError(f"({op.op}) layout annotation {layout!r} is not a Layout", node)
        problems = layout_violations(graph, node, layout, target)
        if problems:
            raise GraphError(f"({op.op}) layout {layout} is illegal on {target.name}: "
                             f"{'; '.join(problems)}", node)


def check(graph: Graph, target: Target | str = "inf2") -> None:
    """Raise a GraphError naming the node if `graph` is malformed or illegal on `target`."""
    target = resolve_target(target)
    records = {}
    for node, data in graph.nx.nodes(data=True):
        op = _check_record(node, data)
        records[node] = (op, _check_types(node, op, data.get("types")))
    _check_cycles(graph)
    for node in graph.nodes:
        op, types = records[node]
        inputs = _check_edges(graph, node, op)
        if OPS[op.op].reference is None:
            if inputs:
                raise GraphError(f"({op.op}) a source has inputs", node)
            if op.op == "constant":
                _check_constant(graph, node, types[0])
        if len(types) != OPS[op.op].outputs(op):
            raise GraphError(f"({op.op}) records {len(types)} outputs, the op has "
                             f"{OPS[op.op].outputs(op)}", node)
        _check_inference(graph, node, op, inputs, types)
        _check_target(graph, node, op, types, target)
    if not graph.outputs:
        raise GraphError(f"graph {graph.name} has no outputs")
    for name, value in graph.outputs.items():
        if value.node not in graph.nx or value.port >= len(graph.types(value.node)):
            raise GraphError(f"output {name!r} refers to {value}, which does not exist",
                             value.node)
