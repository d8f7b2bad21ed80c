"""Reference evaluation of an operator graph in numpy: the plain forward pass every builder, pass
and lowering is checked against.

Each operator runs its `ops.OPS` reference in fp32 (integers in int64).  Rounding points: a float
tensor is rounded to its storage dtype (round to nearest even, `isa.dtypes.cast`) exactly where it
would be stored — (1) graph inputs and constants as they are loaded, (2) every operator output as
it is written.  Nothing is rounded inside one operator: a matmul accumulates in fp32 as PSUM does,
and a fused operator (`linear` with an activation, `add_layernorm`, `attention`) keeps its
intermediates in fp32, which is why fusion can change bf16 results by up to one bf16 rounding.
The storage dtype of a float tensor is the `dtype_policy` ("fp32", "bf16", any float dtype name)
or, with "declared", the tensor's own dtype.  Integer tensors are never re-typed.

Collectives have single-device semantics here: the graph stands for every rank of the group
holding the same values, and reductions average, so all_reduce is the identity, all_gather
repeats x group_size times along its axis, and reduce_scatter keeps this rank's (block 0's) part.
Multi-rank values come from the emulator's collectives, not from this evaluator.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from isa.dtypes import DType, cast, compute_view, dtype
from kernels.graph.ir import Graph
from kernels.graph.ops import OPS, Operator
from kernels.graph.tensor import GraphError, TensorType, Value


def storage_dtype(t: TensorType, policy: DType | None) -> DType:
    """Where a tensor of type `t` is stored under a policy (None = declared dtypes)."""
    if policy is None or not t.dtype.is_float:
        return t.dtype
    return policy


def resolve_policy(dtype_policy: str | DType) -> DType | None:
    if dtype_policy == "declared":
        return None
    try:
        policy = dtype(dtype_policy)
    except (TypeError, ValueError):
        raise GraphError(f"dtype_policy {dtype_policy!r} must be 'declared' or a float dtype "
                         "name such as 'fp32' or 'bf16'") from None
    if not policy.is_float:
        raise GraphError(f"dtype_policy {dtype_policy!r} must be a float dtype")
    return policy


def run_node(graph: Graph, node: str, args: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Run one operator's reference on its (compute-view) inputs; shapes are checked."""
    op: Operator = graph.op(node)
    try:
        results = OPS[op.op].reference(op, args)
    except GraphError as err:
        raise GraphError(f"({op.op}) {err}", node) from None
    types = graph.types(node)
    if len(results) != len(types):
        raise GraphError(f"({op.op}) reference gave {len(results)} outputs for {len(types)}",
                         node)
    for port, (value, t) in enumerate(zip(results, types)):
        if value.shape != t.shape:
            raise GraphError(f"({op.op}) reference output {port} has shape {value.shape}, "
                             f"inference says {t}", node)
    return tuple(results)


def _feed(name: str, value: object, t: TensorType, policy: DType | None) -> np.ndarray:
    value = np.asarray(value)
    if value.shape != t.shape:
        raise GraphError(f"input {name!r} has shape {value.shape}, the graph expects {t}")
    is_float = value.dtype.kind == "f" or value.dtype.kind == "V"  # ml_dtypes floats are "V"
    if t.dtype.is_float != is_float:
        raise GraphError(f"input {name!r} of numpy dtype {value.dtype} does not fit {t}")
    return cast(value, storage_dtype(t, policy))


def evaluate(graph: Graph, inputs: Mapping[str, object], dtype_policy: str | DType = "fp32",
             ) -> dict[str, np.ndarray]:
    """Run `graph` on `inputs` (name -> array); its outputs by name, in storage dtypes."""
    policy = resolve_policy(dtype_policy)
    expected = graph.graph_inputs
    missing = sorted(set(expected) - set(inputs))
    extra = sorted(set(inputs) - set(expected))
    if missing or extra:
        raise GraphError(f"graph {graph.name}: inputs missing {missing or '-'}, unknown "
                         f"{extra or '-'}; it takes {', '.join(expected) or 'none'}")
    order = graph.nodes
    step_of = {node: step for step, node in enumerate(order)}
    last_use = {node: step for step, node in enumerate(order)}
    for u, v in graph.nx.edges():
        last_use[u] = max(last_use[u], step_of[v])
    kept = {v.node for v in graph.outputs.values()}
    values: dict[Value, np.ndarray] = {}
    for step, node in enumerate(order):
        op = graph.op(node)
        types = graph.types(node)
        if op.op == "input":
            results: tuple[np.ndarray, ...] = (_feed(node, inputs[node], types[0], policy),)
        elif op.op == "constant":
            results = (graph.constant_value(node),)
        else:
            args = [compute_view(values[v]) for v in graph.inputs(node)]
            results = run_node(graph, node, args)
        for port, (value, t) in enumerate(zip(results, types)):
            values[Value(node, port)] = cast(value, storage_dtype(t, policy))
        for v in graph.inputs(node):  # free what no later node reads
            if last_use[v.node] == step and v.node not in kept:
                values.pop(v, None)
    return {name: values[v] for name, v in graph.outputs.items()}
