"""Small graph -> graph rewrites: type inference, constant folding, dead-node pruning, precision.

Each returns a new graph and leaves its argument alone.  Constant folding evaluates a node whose
inputs are all constants with its `ops.OPS` reference (fp32) and replaces it by a constant of the
node's type, so the folded graph computes what the original did (bit for bit in fp32; under a
narrower policy the folded value is rounded once, where the original rounded each input).
"""

from __future__ import annotations

import networkx as nx

from isa.dtypes import DType, compute_view, dtype
from kernels.graph.ir import Graph
from kernels.graph.ops import COLLECTIVES, OPS, Operator
from kernels.graph.reference import run_node
from kernels.graph.tensor import GraphError, TensorType, Value


def infer_types(graph: Graph) -> Graph:
    """Re-infer every node's output types from its inputs, in topological order."""
    g = graph.copy()
    for node in g.nodes:
        op = g.op(node)
        spec = OPS[op.op]
        try:
            spec.check_arity(len(g.inputs(node)))
            types = spec.infer(op, g.input_types(node))
        except GraphError as err:
            raise GraphError(f"({op.op}) {err}", node) from None
        g.retype(node, tuple(types))
    return g


def fold_constants(graph: Graph) -> Graph:
    """Replace every operator whose inputs are all constants by constants of its results."""
    g = graph.copy()
    for node in g.nodes:
        op = g.op(node)
        inputs = g.inputs(node)
        if OPS[op.op].reference is None or op.op in COLLECTIVES or not inputs:
            continue
        if not all(g.is_constant(v) for v in inputs):
            continue
        results = run_node(g, node, [compute_view(g.constant_value(v.node)) for v in inputs])
        layer = g.layer(node)
        for port, (value, t) in enumerate(zip(results, g.types(node))):
            name = f"{node}.folded" if len(results) == 1 else f"{node}.folded{port}"
            folded = g.add_constant(name, value, t.dtype, layer)
            g.replace_uses(Value(node, port), folded)
        g.remove(node)
    return g


def prune(graph: Graph) -> Graph:
    """Remove nodes no output depends on (graph inputs stay: they are the interface)."""
    g = graph.copy()
    needed = set()
    for value in g.outputs.values():
        needed.add(value.node)
        needed |= nx.ancestors(g.nx, value.node)
    for node in reversed(g.nodes):
        if node not in needed and g.op(node).op != "input":
            g.remove(node)
    return g


def set_precision(graph: Graph, dt: str | DType) -> Graph:
    """Store every float tensor as `dt`: re-type float inputs and constants (constants keep
    their fp32 values and are rounded when loaded) and re-infer the rest."""
    dt = dtype(dt)
    if not dt.is_float:
        raise GraphError(f"precision {dt} must be a float dtype")
    g = graph.copy()
    for node in g.nodes:
        op = g.op(node)
        if op.op in ("input", "constant") and g.types(node)[0].dtype.is_float:
            t = g.types(node)[0]
            g.nx.nodes[node]["op"] = Operator(op.op, {"shape": t.shape, "dtype": dt})
            g.retype(node, (TensorType(t.shape, dt),))
    return infer_types(g)
