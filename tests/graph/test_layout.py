"""Layout choice (rule, user request, cost callable) and the SBUF/PSUM budget check."""

from __future__ import annotations

import pytest

from isa.target import INF1, INF2
from kernels.graph import Graph, GraphError, compile
from kernels.graph import models as m
from kernels.graph.compiler import CompileOptions, run_pass
from kernels.graph.layout import (
    AttentionTiles,
    GemmTiles,
    LayoutQuery,
    PoolTiles,
    RowTiles,
    WorkingSet,
)

SMALL_BERT = m.BertConfig(layers=1, hidden=768, heads=12, ffn=3072, seq_len=128, vocab=64)


def layouts(g: Graph) -> dict:
    return {n: g.annotations(n)["layout"] for n in g.nodes if "layout" in g.annotations(n)}


def test_rule_tiles_follow_the_target_limits():
    g = compile(m.bert(SMALL_BERT), INF2, stop_after="budget")
    chosen = layouts(g)
    ffn = chosen["layer0/intermediate"]
    assert ffn.source == "rule"
    assert ffn.tiles == GemmTiles(tile_m=128, tile_k=128, tile_n=512, bufs=2)
    assert chosen["layer0/attention"].tiles == AttentionTiles(128, 128)
    assert chosen["layer0/output.ln"].tiles == RowTiles(128, 768, 2)
    assert g.op("layer0/output.ln").op == "add_layernorm"
    assert "layer0/reshape" not in chosen  # data movement has no tiles
    # working set of the FFN tile: 2 buffers x (128 + 512 + 512 elements) x 4 bytes, plus bias
    assert g.annotations("layer0/intermediate")["working_set"] == WorkingSet(
        2 * (128 + 512 + 512) * 4 + 512 * 4, 2 * 512 * 4)


def test_rule_tiles_small_and_pooling_shapes():
    g = compile(m.resnet(18, image_size=32, width=8, num_classes=10, batch=2), INF2,
                stop_after="budget")
    chosen = layouts(g)
    assert chosen["stem/conv1"].tiles == GemmTiles(8, 128, 512)  # K = 3*7*7, N = 2*16*16
    assert chosen["stem/maxpool2d"].tiles == PoolTiles(16, 8)
    assert chosen["head/fc"].tiles == GemmTiles(2, 64, 10)


def test_user_requests_override_the_rule_and_survive_fusion():
    g = m.bert(SMALL_BERT)
    g.set_layout("layer0/intermediate", tile_n=256)
    g.set_layout("layer0/intermediate", bufs=3)
    out = compile(g, INF2, stop_after="budget")
    chosen = layouts(out)["layer0/intermediate"]
    assert out.op("layer0/intermediate").op == "linear"
    assert chosen.source == "user" and chosen.tiles == GemmTiles(128, 128, 256, 3)


@pytest.mark.parametrize("node, params, message", [
    ("layer0/reshape", {"tile_n": 4}, "moves data by DMA and has no tile parameters"),
    ("layer0/intermediate", {"tile_q": 4}, "has no tile parameter.*tile_q; its parameters: "
                                           "tile_m, tile_k, tile_n, bufs"),
    ("layer0/intermediate", {"tile_n": 0}, "tile_n=0 must be a positive int"),
])
def test_bad_requests_are_rejected_at_once(node, params, message):
    g = m.bert(SMALL_BERT)
    with pytest.raises(GraphError, match=f"node {node}: .*{message}"):
        g.set_layout(node, **params)


def test_an_illegal_request_fails_the_check_after_the_layout_pass():
    g = m.bert(SMALL_BERT)
    g.set_layout("layer0/intermediate", tile_n=1024)
    with pytest.raises(GraphError, match="after pass layout: node layer0/intermediate: "
                                         r"\(linear\) layout .* tile_n=1024 exceeds "
                                         "matmul_max_n=512"):
        compile(g, INF2)


def test_a_cost_callable_picks_the_cheapest_legal_candidate():
    seen = []

    def cost(query: LayoutQuery) -> float:
        seen.append(query)
        if isinstance(query.tiles, GemmTiles):
            return abs(query.tiles.tile_n - 128) + query.tiles.bufs + query.tiles.tile_m / 1000
        return 0.0

    g = compile(m.bert(SMALL_BERT), INF2, cost=cost, stop_after="budget")
    ffn = layouts(g)["layer0/intermediate"]
    assert ffn.source == "cost" and ffn.tiles == GemmTiles(64, 128, 128, 2)
    assert all(q.target is INF2 for q in seen)
    assert {q.node for q in seen} >= {"layer0/intermediate", "layer0/attention"}
    with pytest.raises(GraphError, match="cost callable returned nan"):
        compile(m.bert(SMALL_BERT), INF2, cost=lambda q: float("nan"), stop_after="layout")


def test_budget_rejects_a_row_that_does_not_fit_sbuf():
    g = Graph()
    g.output("y", g.apply("softmax", g.input("x", (4, 60_000)), name="wide"))
    with pytest.raises(GraphError, match=r"pass budget: node wide: \(softmax\) working set of "
                                         r"rows\(p=4,free=60000,bufs=1\) by rule needs 480000 "
                                         "bytes of SBUF per partition; inf2 has 196608"):
        compile(g, INF2)


def test_budget_depends_on_the_target():
    g = Graph()
    g.output("y", g.apply("softmax", g.input("x", (4, 12_000)), name="row"))
    assert compile(g, INF2).annotations("row")["working_set"].sbuf_bytes == 96_000
    with pytest.raises(GraphError, match="node row: .* 96000 bytes of SBUF per partition; inf1 "
                                         "has 81920"):
        compile(g, INF1)


def test_budget_rejects_an_oversized_request():
    g = Graph()
    g.output("y", g.apply("add", g.input("a", (2, 70_000)), g.input("b", (2, 70_000)),
                          name="sum"))
    # the rule: half of a partition (98304 B) over 2 buffers x 3 operands x 4 bytes
    assert layouts(compile(g, INF2))["sum"].tiles.tile_free == 4096
    g.set_layout("sum", tile_free=60_000)
    with pytest.raises(GraphError, match=r"node sum: \(add\) working set .* needs 1440000 bytes "
                                         "of SBUF"):
        compile(g, INF2)


def test_budget_rejects_more_accumulators_than_psum_holds():
    g = m.bert(SMALL_BERT)
    g.set_layout("layer0/intermediate", bufs=9)
    with pytest.raises(GraphError, match=r"pass budget: node layer0/intermediate: \(linear\) "
                                         r".* needs 18432 bytes of PSUM per partition; inf2 has "
                                         "16384"):
        compile(g, INF2)


def test_precision_halves_the_working_set():
    g = m.bert(SMALL_BERT)
    fp32 = compile(g, INF2, stop_after="budget").annotations("layer0/intermediate")
    bf16 = run_pass("budget", run_pass("layout", compile(
        g, INF2, options=CompileOptions(precision="bf16"), stop_after="precision")))
    assert bf16.annotations("layer0/intermediate")["working_set"].sbuf_bytes * 2 == \
        fp32["working_set"].sbuf_bytes
