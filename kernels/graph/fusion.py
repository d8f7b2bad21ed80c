"""Operator fusion: a table of patterns, each anchored at one op and rewriting the graph there.

* `linear`: matmul [+ add of a bias [N]] [+ relu/gelu/silu/tanh/sigmoid] -> one `linear` node
  with `activation`, so the bias and activation run on the PSUM -> SBUF evacuation.
* `add_layernorm`: layernorm(a + b) over a residual add of equal shapes -> one `add_layernorm`
  node whose second output is a + b for the add's other users (pre-LN transformers read it).

A fused node keeps the id of its anchor (the matmul, the layernorm), so names and layout requests
on the anchor survive.  Nodes absorbed into a fusion must have no other use, no layout request of
their own and not be graph outputs, and a fusion never creates a cycle; else it does not apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx

from kernels.graph.ir import Graph
from kernels.graph.ops import Operator
from kernels.graph.tensor import Value

# Unary ops a linear can absorb, and the activation name it then carries.
ACTIVATION_OF: dict[str, Callable[[Operator], str]] = {
    "relu": lambda op: "relu",
    "gelu": lambda op: "gelu" if op.approximate == "none" else "gelu_tanh",
    "silu": lambda op: "silu",
    "tanh": lambda op: "tanh",
    "sigmoid": lambda op: "sigmoid",
}


def _sole_user(g: Graph, value: Value) -> str | None:
    """The one node that reads `value`, if it has exactly one use and is no graph output."""
    uses = g.consumers(value)
    if len(uses) != 1 or g.output_names(value) or len(g.types(value.node)) != 1:
        return None
    node = uses[0][0]
    return None if "layout_request" in g.annotations(node) else node


def _fuse_linear(g: Graph, node: str) -> bool:
    x, w = g.inputs(node)
    out = Value(node)
    inputs, activation, absorbed, tail = [x, w], "none", [], out
    user = _sole_user(g, tail)
    if user is not None and g.op(user).op == "add":
        a, b = g.inputs(user)
        bias = b if a == tail else a
        n = g.type_of(out).shape[-1]
        # (the bias cannot depend on the matmul: the add would then be its second user)
        if bias != tail and g.type_of(bias).shape == (n,) and g.types(user)[0] == g.type_of(out):
            inputs.append(bias)
            absorbed.append(user)
            tail = Value(user)
            user = _sole_user(g, tail)
    if user is not None and g.op(user).op in ACTIVATION_OF:
        activation = ACTIVATION_OF[g.op(user).op](g.op(user))
        absorbed.append(user)
        tail = Value(user)
    if not absorbed:
        return False
    g.replace_uses(tail, out)
    g.set_op(node, Operator("linear", {"activation": activation}), inputs)
    for gone in reversed(absorbed):
        g.remove(gone)
    return True


def _fuse_activation(g: Graph, node: str) -> bool:
    """A linear without activation absorbs a following activation."""
    if g.op(node).activation != "none":
        return False
    user = _sole_user(g, Value(node))
    if user is None or g.op(user).op not in ACTIVATION_OF:
        return False
    g.replace_uses(Value(user), Value(node))
    g.set_op(node, Operator("linear", {"activation": ACTIVATION_OF[g.op(user).op](g.op(user))}),
             g.inputs(node))
    g.remove(user)
    return True


def _fuse_add_layernorm(g: Graph, node: str) -> bool:
    x, *params = g.inputs(node)
    add = x.node
    if g.op(add).op != "add" or "layout_request" in g.annotations(add):
        return False
    a, b = g.inputs(add)
    if not g.type_of(a) == g.type_of(b) == g.type_of(x):
        return False  # a broadcasting add is not a residual
    others = [v for v, _ in g.consumers(x) if v != node]
    if any(nx.has_path(g.nx, other, node) for other in others):
        return False  # rewiring them to the fused node would close a cycle
    g.set_op(node, Operator("add_layernorm", {"eps": g.op(node).eps}), [a, b, *params])
    g.replace_uses(x, Value(node, 1))
    g.remove(add)
    return True


@dataclass(frozen=True)
class Fusion:
    """One fusion pattern: the op it is anchored at and the rewrite (True if it applied)."""

    name: str
    anchor: str
    rewrite: Callable[[Graph, str], bool]


FUSIONS: tuple[Fusion, ...] = (
    Fusion("linear", "matmul", _fuse_linear),
    Fusion("linear_activation", "linear", _fuse_activation),
    Fusion("add_layernorm", "layernorm", _fuse_add_layernorm),
)


def fuse(graph: Graph) -> Graph:
    """Apply every pattern of FUSIONS, in table order, at every anchor it has."""
    g = graph.copy()
    applied: dict[str, int] = {}
    for fusion in FUSIONS:
        for node in g.nodes:
            if node in g and g.op(node).op == fusion.anchor and fusion.rewrite(g, node):
                applied[fusion.name] = applied.get(fusion.name, 0) + 1
    g.meta["fusions"] = dict(applied)
    return g
