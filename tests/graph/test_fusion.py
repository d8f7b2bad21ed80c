"""Fusion: the patterns apply where they should, nowhere else, and never change results."""

from __future__ import annotations

import numpy as np
from hypothesis import given

from kernels.graph import Graph, Value, check, evaluate
from kernels.graph.fusion import FUSIONS, fuse
from tests.graph.strategies import dense_blocks, random_graphs


def ops(g: Graph) -> list[str]:
    return [g.op(n).op for n in g.nodes if g.op(n).op not in ("input", "constant")]


@given(dense_blocks())
def test_fusion_preserves_results(case):
    g, feed = case
    fused = fuse(g)
    check(fused)
    before, after = evaluate(g, feed), evaluate(fused, feed)
    for name in g.outputs:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-6, atol=1e-7)
    assert len(ops(fused)) <= len(ops(g))
    assert not any(_fusable_matmul(fused, n) for n in fused.nodes)


def _fusable_matmul(g: Graph, node: str) -> bool:
    """A matmul left whose only use is an activation (which fusion should have absorbed)."""
    if g.op(node).op != "matmul" or g.output_names(Value(node)):
        return False
    uses = g.consumers(Value(node))
    return len(uses) == 1 and g.op(uses[0][0]).op in ("relu", "gelu", "silu", "tanh", "sigmoid")


@given(random_graphs(max_ops=10))
def test_fusion_preserves_results_of_random_graphs(case):
    g, feed = case
    fused = fuse(g)
    check(fused)
    before, after = evaluate(g, feed), evaluate(fused, feed)
    for name in g.outputs:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-6, atol=1e-7)


def block(extra_use: bool = False, pre_ln: bool = False) -> Graph:
    g = Graph("block")
    x = g.input("x", (4, 8))
    h = g.apply("matmul", x, g.weight("w", (8, 8)), name="fc")
    h = g.apply("add", h, g.weight("b", (8,)), name="bias")
    act = g.apply("gelu", h, approximate="tanh", name="act")
    res = g.apply("add", x, act, name="residual")
    ln = g.apply("layernorm", res, g.weight("gamma", (8,)), g.weight("beta", (8,)), name="ln")
    g.output("y", ln)
    if extra_use:
        g.output("pre_activation", h)
    if pre_ln:
        g.output("stream", g.apply("relu", res, name="later"))
    return g


def test_linear_and_add_layernorm_fuse_keeping_the_anchor_ids():
    fused = fuse(block())
    assert ops(fused) == ["linear", "add_layernorm"]
    assert fused.op("fc").activation == "gelu_tanh"
    assert fused.inputs("fc") == (Value("x"), Value("w"), Value("b"))
    assert fused.inputs("ln") == (Value("x"), Value("fc"), Value("gamma"), Value("beta"))
    assert fused.outputs["y"] == Value("ln")
    assert fused.meta["fusions"] == {"linear": 1, "add_layernorm": 1}


def test_an_intermediate_with_another_use_is_not_absorbed():
    fused = fuse(block(extra_use=True))
    assert ops(fused) == ["linear", "gelu", "add_layernorm"]
    assert fused.op("fc").activation == "none"


def test_the_residual_sum_stays_available_as_the_second_output():
    g = block(pre_ln=True)
    fused = fuse(g)
    assert fused.inputs("later") == (Value("ln", 1),)
    feed = {"x": np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)}
    np.testing.assert_array_equal(evaluate(fused, feed)["stream"], evaluate(g, feed)["stream"])


def test_no_fusion_through_a_broadcasting_add_or_a_layout_request():
    g = Graph()
    x = g.input("x", (4, 8))
    row = g.input("row", (1, 8))
    g.output("y", g.apply("layernorm", g.apply("add", x, row), g.weight("gamma", (8,))))
    assert ops(fuse(g)) == ["add", "layernorm"]
    g = block()
    g.set_layout("act", tile_free=8)
    fused = fuse(g)
    assert fused.op("fc").activation == "none" and "act" in fused


def test_a_later_activation_joins_an_existing_linear():
    g = Graph()
    x = g.input("x", (2, 3))
    h = g.apply("linear", x, g.weight("w", (3, 4)), name="fc")
    g.output("y", g.apply("sigmoid", h))
    fused = fuse(g)
    assert ops(fused) == ["linear"] and fused.op("fc").activation == "sigmoid"
    assert [f.name for f in FUSIONS] == ["linear", "linear_activation", "add_layernorm"]


def test_fusion_never_creates_a_cycle():
    # layernorm's scale is computed from the residual sum: rewiring that use to the fused
    # node's second output would make the fused node its own input
    g = Graph()
    total = g.apply("add", g.input("x", (1, 8)), g.input("y", (1, 8)), name="sum")
    gamma = g.apply("reshape", total, shape=(8,), name="gamma")
    g.output("z", g.apply("layernorm", total, gamma, name="ln"))
    fused = fuse(g)
    check(fused)
    assert ops(fused) == ["add", "reshape", "layernorm"]


def test_a_matmul_read_twice_is_not_fused():
    g = Graph()
    h = g.apply("matmul", g.input("x", (3,)), g.weight("w", (3, 3)), name="mm")
    g.output("y", g.apply("add", h, g.apply("relu", h)))
    assert fuse(g).op("mm").op == "matmul"
