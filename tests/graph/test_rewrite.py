"""The small rewrite passes: type inference, constant folding, pruning and precision."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from kernels.graph import OPS, Graph, GraphError, Value, check, evaluate
from kernels.graph import models as m
from kernels.graph.compiler import run_pass
from kernels.graph.rewrite import fold_constants, infer_types, prune, set_precision
from tests.graph.strategies import random_graphs


# ---- inference --------------------------------------------------------------------------------
def test_inference_propagates_a_new_batch_size():
    g = m.bert(m.BertConfig(layers=1, hidden=32, heads=2, ffn=64, seq_len=8, batch=2, vocab=50))
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        g = g.with_input(name, (4, 8))
    with pytest.raises(GraphError, match=r"node embeddings/gather: \(gather\) shape mismatch"):
        check(g)
    fixed = run_pass("infer", g)
    assert fixed.types(fixed.outputs["last_hidden_state"].node)[0].shape == (4, 8, 32)
    assert fixed.nx.edges["layer0/attention.query", "layer0/attention.query.add", 0][
        "type"].shape == (4, 8, 32)


def test_inference_names_the_node_it_cannot_type():
    g = Graph()
    g.output("y", g.apply("reshape", g.input("x", (2, 3)), shape=(2, 3, 1), name="fixed"))
    with pytest.raises(GraphError, match=r"node fixed: \(reshape\) reshape: 9 elements do not "
                                         r"fit shape \(2, 3, 1\)"):
        infer_types(g.with_input("x", (3, 3)))


def test_inference_is_the_identity_on_a_consistent_graph():
    g = m.gpt_block_graph(m.GptConfig(layers=1, hidden=32, heads=2, vocab=10), seq_len=4)
    h = infer_types(g)
    assert all(h.types(n) == g.types(n) for n in g.nodes)


# ---- constant folding -------------------------------------------------------------------------
def _no_foldable_nodes(g: Graph) -> bool:
    return not any(OPS[g.op(n).op].reference is not None and g.inputs(n)
                   and all(g.is_constant(v) for v in g.inputs(n)) for n in g.nodes)


@given(random_graphs())
def test_folding_preserves_results_and_leaves_nothing_foldable(case):
    g, feed = case
    folded = fold_constants(g)
    check(folded)
    assert _no_foldable_nodes(folded)
    before, after = evaluate(g, feed), evaluate(folded, feed)
    for name in g.outputs:
        np.testing.assert_array_equal(after[name], before[name])


def test_folding_replaces_constant_subgraphs_by_constants():
    g = Graph()
    x = g.input("x", (2, 3))
    w = g.apply("transpose", g.weight("w", (3, 2)), perm=(1, 0), name="wt")
    scaled = g.apply("mul", w, g.constant(np.float32(2.0), "two"), name="scaled")
    parts = g.apply("split", scaled, axis=0, sizes=(1, 1), name="parts")
    g.output("y", g.apply("add", g.apply("add", x, parts[0]), parts[1]))
    folded = prune(fold_constants(g))
    ops = {folded.op(n).op for n in folded.nodes}
    assert ops == {"input", "constant", "add"}
    assert "parts.folded1" in folded
    np.testing.assert_array_equal(folded.constant_value("parts.folded0"),
                                  2.0 * g.constant_value("w").T[:1])
    assert folded.types("parts.folded0") == g.types("parts")[:1]


def test_collectives_are_not_folded():
    g = Graph()
    g.output("y", g.apply("all_reduce", g.weight("w", (2,)), group_size=2))
    assert fold_constants(g).op(g.outputs["y"].node).op == "all_reduce"


def test_folding_the_position_embeddings_of_bert():
    g = m.bert(m.BertConfig(layers=1, hidden=32, heads=2, ffn=64, seq_len=8, vocab=50))
    folded = prune(fold_constants(g))
    assert "embeddings/gather_1" not in folded and "embeddings/gather_1.folded" in folded
    assert "embeddings/position" not in folded  # only the folded rows remain


# ---- pruning ----------------------------------------------------------------------------------
def test_prune_removes_what_no_output_needs_but_keeps_inputs():
    g = Graph()
    x = g.input("x", (2,))
    unused = g.input("unused", (3,))
    g.apply("relu", unused, name="dead")
    g.weight("lonely", (4,))
    g.output("y", g.apply("tanh", x, name="live"))
    pruned = prune(g)
    assert set(pruned.nodes) == {"x", "unused", "live"}
    check(pruned)


# ---- precision --------------------------------------------------------------------------------
def test_precision_retypes_float_tensors_only():
    g = m.bert(m.BertConfig(layers=1, hidden=32, heads=2, ffn=64, seq_len=8, vocab=50))
    h = set_precision(g, "bf16")
    check(h)
    for node in h.nodes:
        for before, after in zip(g.types(node), h.types(node)):
            assert after.shape == before.shape
            assert after.dtype.name == ("bf16" if before.dtype.is_float else before.dtype.name)
    with pytest.raises(GraphError, match="must be a float dtype"):
        set_precision(g, "int8")
    assert h.types("input_ids")[0].dtype.name == "int32"
    assert isinstance(h.outputs["last_hidden_state"], Value)
