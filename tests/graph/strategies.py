"""Hypothesis strategies for operator graphs (kept beside the graph tests; tests/strategies.py
holds the ISA's): random DAGs of elementwise, normalisation and data-movement operators over
2-D fp32 tensors, with graph inputs, constants, several uses of one tensor and several outputs,
and small dense blocks (matmul, bias, activation, residual, layernorm) for the fusion tests.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from kernels.graph import Graph, Value

UNARY = ("relu", "gelu", "silu", "tanh", "sigmoid", "exp", "erf")
BINARY = ("add", "sub", "mul")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "tanh", "sigmoid")


@st.composite
def random_graphs(draw, max_ops: int = 12, constants: bool = True):
    """(graph, inputs): a random DAG whose tensors are [rows, cols] fp32 with varying cols."""
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    rows = draw(st.integers(1, 3))
    g = Graph("random", seed=seed)
    values: list[Value] = []
    feed = {}
    for i in range(draw(st.integers(1, 2))):
        cols = draw(st.integers(1, 5))
        values.append(g.input(f"in{i}", (rows, cols)))
        feed[f"in{i}"] = rng.standard_normal((rows, cols)).astype(np.float32)
    kinds = ["unary", "binary", "concat", "slice", "softmax", "layernorm"]
    kinds += ["constant", "weight"] if constants else []
    for _ in range(draw(st.integers(1, max_ops))):
        kind = draw(st.sampled_from(kinds))
        a = values[draw(st.integers(0, len(values) - 1))]
        cols = g.type_of(a).shape[1]
        if kind == "unary":
            values.append(g.apply(draw(st.sampled_from(UNARY)), a))
        elif kind == "binary":
            same = [v for v in values if g.type_of(v).shape == (rows, cols)]
            b = same[draw(st.integers(0, len(same) - 1))]
            values.append(g.apply(draw(st.sampled_from(BINARY)), a, b))
        elif kind == "concat":
            b = values[draw(st.integers(0, len(values) - 1))]
            values.append(g.apply("concat", a, b, axis=1))
        elif kind == "slice" and cols > 1:
            start = draw(st.integers(0, cols - 2))
            values.append(g.apply("slice", a, starts=(start,), ends=(cols,), axes=(1,)))
        elif kind == "softmax":
            values.append(g.apply("softmax", a))
        elif kind == "layernorm":
            values.append(g.apply("layernorm", a, g.weight(f"gamma{len(g)}", (cols,),
                                                           offset=1.0, scale=0.1)))
        elif kind == "constant":
            values.append(g.constant(rng.standard_normal((rows, draw(st.integers(1, 4))))
                                     .astype(np.float32)))
        elif kind == "weight":
            values.append(g.weight(f"w{len(g)}", (rows, draw(st.integers(1, 4))), scale=1.0))
    computed = [v for v in values if g.op(v.node).op not in ("input", "constant")] or values
    g.output("out", computed[-1])
    extra = draw(st.integers(0, len(values) - 1))
    if values[extra] != computed[-1]:
        g.output("extra", values[extra])
    return g, feed


@st.composite
def dense_blocks(draw):
    """(graph, inputs): x @ w [+ bias] [-> activation] [+ residual] [-> layernorm], sometimes
    with an extra use of an intermediate tensor (which must block its fusion)."""
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    m, k, n = (draw(st.integers(1, 6)) for _ in range(3))
    lead = draw(st.sampled_from([(), (2,)]))
    g = Graph("dense", seed=seed)
    x = g.input("x", lead + (m, k))
    feed = {"x": rng.standard_normal(lead + (m, k)).astype(np.float32)}
    h = g.apply("matmul", x, g.weight("w", (k, n), scale=0.5))
    chain = [h]
    if draw(st.booleans()):
        bias = g.weight("b", (n,))
        h = g.apply("add", *((h, bias) if draw(st.booleans()) else (bias, h)))
        chain.append(h)
    if draw(st.booleans()):
        act = draw(st.sampled_from(ACTIVATIONS))
        h = (g.apply("gelu", h, approximate="tanh") if act == "gelu_tanh" else g.apply(act, h))
        chain.append(h)
    if draw(st.booleans()):
        skip = g.input("skip", lead + (m, n))
        feed["skip"] = rng.standard_normal(lead + (m, n)).astype(np.float32)
        h = g.apply("add", h, skip)
        chain.append(h)
        if draw(st.booleans()):
            h = g.apply("layernorm", h, g.weight("gamma", (n,), offset=1.0, scale=0.1),
                        g.weight("beta", (n,)))
            chain.append(h)
    g.output("y", h)
    if draw(st.booleans()):  # another use of some intermediate
        g.output("tap", chain[draw(st.integers(0, len(chain) - 1))])
    return g, feed
