"""The lowering of compiled graphs to library kernels, run on the emulator against the numpy
reference (`kernels.graph.reference.evaluate`) of the same graph.

Tolerances (measured errors are several times smaller): fp32 |error| <= 1e-5 x max|reference|
(fp32 rounding of different summation orders: tiled PSUM accumulation, bn_stats variances);
bf16 |error| <= 3e-2 x max|reference|: both sides round every stored tensor to bf16, but not at
the same points (the emulator's attention rounds its probabilities to bf16 before P V, its
add_layernorm stores the sum before normalising it), and a one-ulp difference (2^-8) in one
tensor propagates through the layers.
"""

from __future__ import annotations

import numpy as np
import pytest

from emulator.races import check_races
from emulator.runner import run
from kernels.graph import Graph, compile, evaluate
from kernels.graph import models as m
from kernels.graph.lowering import LoweredModel, LoweringError, lower

RNG = np.random.default_rng(5)
TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2}
BERT = dict(layers=2, hidden=128, heads=2, ffn=256, seq_len=32, vocab=100, batch=2)
GPT = m.GptConfig(layers=2, hidden=64, heads=2, vocab=100, max_positions=64)


def bert_inputs(batch=2, seq=32):
    return {"input_ids": RNG.integers(0, 100, (batch, seq)).astype(np.int32),
            "token_type_ids": RNG.integers(0, 2, (batch, seq)).astype(np.int32),
            "attention_mask": (RNG.random((batch, seq)) > 0.2).astype(np.float32)}


def decode_inputs():
    feed = {"input_ids": RNG.integers(0, 100, (2, 1)).astype(np.int32)}
    for i in range(GPT.layers):
        for kv in ("key", "value"):
            feed[f"past.{i}.{kv}"] = RNG.standard_normal((2, 2, 15, 32)).astype(np.float32)
    return feed


CASES = {
    "mlp": (lambda: m.mlp((32, 64, 48, 10), batch=6),
            lambda: {"x": RNG.standard_normal((6, 32)).astype(np.float32)}),
    "bert": (lambda: m.bert(m.BERT_BASE, **BERT), bert_inputs),
    "gpt_prefill": (lambda: m.gpt_prefill(GPT, batch=2, seq_len=16),
                    lambda: {"input_ids": RNG.integers(0, 100, (2, 16)).astype(np.int32)}),
    "gpt_decode": (lambda: m.gpt_decode(GPT, batch=2, past_len=15), decode_inputs),
    "resnet18": (lambda: m.resnet(18, image_size=32, width=8, num_classes=10, batch=2),
                 lambda: {"image": RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)}),
}


def emulate(graph: Graph, inputs: dict, precision: str | None = None,
            **options) -> tuple[dict, LoweredModel, object]:
    """Compile with the lowering, check the program race-free, run it functionally."""
    compiled = compile(graph, "inf2", lowering=lower, precision=precision, **options)
    lowered = compiled.meta["lowered"]
    assert len(lowered.programs) == 1
    check_races(lowered.programs[0])
    result = run(lowered.programs[0], lowered.feeds(compiled, inputs)[0], "inf2")
    return lowered.collect([result.outputs]), lowered, result.report


def assert_close(outputs: dict, reference: dict, dtype: str) -> None:
    assert set(outputs) == set(reference)
    for name, expected in reference.items():
        got = np.asarray(outputs[name], np.float64)
        expected = np.asarray(expected, np.float64)
        assert got.shape == expected.shape, name
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE[dtype] * scale,
                                   err_msg=f"{name} at {dtype}")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("model", sorted(CASES))
def test_every_builder_matches_the_reference(model, dtype):
    build, make_inputs = CASES[model]
    graph, inputs = build(), make_inputs()
    outputs, lowered, report = emulate(graph, inputs, dtype)
    assert_close(outputs, evaluate(graph, inputs, dtype), dtype)
    assert report.latency_ns > 0
    # Every instruction of the program belongs to exactly one node's record.
    program = lowered.programs[0]
    covered = {name: np.zeros(len(program.stream(name).instructions), int)
               for name in (s.name for s in program.streams)}
    for record in lowered.nodes:
        for span in record.spans:
            covered[span.stream][span.start:span.end] += 1
    assert all((c == 1).all() for c in covered.values())
    assert sum(r.instructions for r in lowered.nodes) == program.instruction_count


@pytest.fixture(scope="module")
def bert_graph_and_inputs():
    return m.bert(m.BERT_BASE, **BERT), bert_inputs()


def test_records_name_kernels_tiles_and_fused_nodes(bert_graph_and_inputs):
    graph, _ = bert_graph_and_inputs
    lowered = compile(graph, "inf2", lowering=lower).meta["lowered"]
    intermediate = lowered.node("layer0/intermediate")
    assert intermediate.kernels == ("transpose", "matmul_hoisted")
    assert dict(intermediate.layout) == {"TILE_M": 64, "TILE_K": 128, "TILE_N": 256}
    assert intermediate.note == "epilogue bias+gelu"
    assert lowered.node("layer0/reshape").instructions == 0  # a view
    assert lowered.node("embeddings/gather").kernels == ()  # looked up on the host
    attention = lowered.node("layer0/attention")
    assert dict(attention.layout) == {"Q_TILE": 32, "KV_TILE": 128}
    assert "layer0/attention" in lowered.summary()
    assert lowered.to_json()["nodes"][0]["node"] == lowered.nodes[0].node
    resnet = compile(m.resnet(18, 32, 8), "inf2", lowering=lower).meta["lowered"]
    relu = resnet.node("stem/conv1.relu")
    assert relu.fused_into == "stem/conv1" and relu.instructions == 0
    assert resnet.node("stem/conv1").note == "epilogue bias+relu"


def test_a_tile_change_moves_time_not_results(bert_graph_and_inputs):
    graph, inputs = bert_graph_and_inputs
    node = "layer0/intermediate"
    wide, wide_lowered, wide_report = emulate(graph, inputs)
    narrow_graph = graph.copy()
    narrow_graph.set_layout(node, tile_n=64)
    narrow, narrow_lowered, narrow_report = emulate(narrow_graph, inputs)
    assert dict(narrow_lowered.node(node).layout)["TILE_N"] == 64
    # Four times the matmuls (N = 256 in tiles of 64) for the same products.
    assert narrow_lowered.node(node).instructions > wide_lowered.node(node).instructions
    assert narrow_report.latency_ns != wide_report.latency_ns
    np.testing.assert_array_equal(narrow["last_hidden_state"], wide["last_hidden_state"])


def movement_graph() -> Graph:
    """transpose, split, slice (with a step), concat, broadcasting and scalar element-wise ops,
    softmax, rmsnorm, batch_matmul and a static gather, on one small graph."""
    g = Graph("movement", seed=3)
    x = g.input("x", (2, 6, 8))
    t = g.apply("transpose", x, perm=(0, 2, 1))                      # [2, 8, 6]
    a, b = g.apply("split", t, axis=1, sizes=(3, 5))                  # [2, 3, 6], [2, 5, 6]
    s = g.apply("slice", b, starts=(0,), ends=(5,), axes=(1,), steps=(2,))  # [2, 3, 6]
    c = g.apply("concat", a, s, axis=2)                               # [2, 3, 12]
    bias = g.weight("bias", (3, 12))
    y = g.apply("add", c, bias)                                       # [3, 12] over [2, 3, 12]
    y = g.apply("mul", y, g.constant(np.float32(0.5), "half"))
    y = g.apply("softmax", y)
    y = g.apply("rmsnorm", y, g.weight("gamma", (12,), offset=1.0), eps=1e-6)
    w = g.apply("reshape", g.weight("w", (24, 4)), shape=(2, 12, 4))
    z = g.apply("batch_matmul", y, w)                                 # [2, 3, 4]
    rows = g.apply("gather", z, g.constant(np.array([2, 0], np.int32), "ids"), axis=1)
    g.output("rows", rows)
    g.output("t", t)
    return g


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_data_movement_and_broadcasting_ops(dtype):
    graph = movement_graph()
    inputs = {"x": RNG.standard_normal((2, 6, 8)).astype(np.float32)}
    outputs, lowered, _ = emulate(graph, inputs, dtype)
    assert_close(outputs, evaluate(graph, inputs, dtype), dtype)
    assert lowered.node("add").note.startswith("bias broadcast to [2, 3, 12]")
    np.testing.assert_array_equal(outputs["t"], evaluate(graph, inputs, dtype)["t"])


def test_data_parallel_and_pipeline_programs_match_one_core(bert_graph_and_inputs):
    from emulator.system import run_system

    graph, inputs = bert_graph_and_inputs
    expected = evaluate(graph, inputs)
    for partition in ("data", "pipeline"):
        compiled = compile(graph, "inf2", lowering=lower, cores=2, partition=partition)
        lowered = compiled.meta["lowered"]
        assert lowered.partition == partition and lowered.replicas == 2
        programs = list(lowered.programs) * (2 if partition == "data" else 1)
        for program in lowered.programs:
            check_races(program)
        result = run_system(programs, lowered.feeds(compiled, inputs), "inf2.xlarge")
        outputs = lowered.collect([result.outputs[k] for k in range(2)])
        assert_close(outputs, expected, "fp32")
    assert any(r.op == "recv" for r in lowered.nodes)
    assert lowered.transfers[0].src == 0 and lowered.transfers[0].dst == 1


def lowered_directly(graph: Graph) -> LoweredModel:
    return lower(compile(graph, "inf2", stop_after="hbm_placement"), "inf2")


def test_unlowerable_nodes_name_the_node_and_the_reason():
    g = Graph("erf")
    g.output("y", g.apply("erf", g.input("x", (4, 8)), name="the_erf"))
    with pytest.raises(LoweringError, match=r"node the_erf: \(erf\) has no Scalar-engine"):
        lowered_directly(g)
    # Through the compiler the error names the pass too.
    with pytest.raises(ValueError, match=r"pass lower: node the_erf: \(erf\)"):
        compile(g, "inf2", lowering=lower)

    g = Graph("causal")
    q = g.input("q", (1, 1, 4, 8))
    kv = g.input("kv", (1, 1, 6, 8))
    g.output("y", g.apply("attention", q, kv, kv, causal=True, name="attn"))
    with pytest.raises(LoweringError, match=r"node attn: .*causal with 4 queries and 6 keys"):
        lowered_directly(g)

    g = Graph("grouped")
    x = g.input("x", (1, 4, 8, 8))
    g.output("y", g.apply("conv2d", x, g.weight("w", (4, 2, 3, 3)), groups=2, name="conv"))
    with pytest.raises(LoweringError, match=r"node conv: \(conv2d\) groups=2"):
        lowered_directly(g)

    g = Graph("dynamic_gather")
    table = g.input("table", (10, 4))
    ids = g.input("ids", (3,), "int32")
    g.output("y", g.apply("gather", table, ids, name="lookup"))
    with pytest.raises(LoweringError, match=r"node lookup: .*no indirect DMA"):
        lowered_directly(g)


def test_feeds_check_the_inputs(bert_graph_and_inputs):
    graph, inputs = bert_graph_and_inputs
    compiled = compile(graph, "inf2", lowering=lower)
    lowered = compiled.meta["lowered"]
    with pytest.raises(ValueError, match=r"inputs missing \['token_type_ids'\]"):
        lowered.feeds(compiled, {k: v for k, v in inputs.items() if k != "token_type_ids"})
    bad = dict(inputs, input_ids=np.full((2, 32), 100, np.int32))
    with pytest.raises(ValueError, match=r"node embeddings/gather: gather: an index of input "
                                         r"'input_ids' is outside -100..99"):
        lowered.feeds(compiled, bad)


def image_graph() -> Graph:
    """conv2d with weights from an input (OIHW, no epilogue) and stride 2, padded average
    pooling, max pooling, sigmoid and tanh, a long transpose."""
    g = Graph("image", seed=4)
    x = g.input("x", (1, 4, 9, 9))
    w = g.input("w", (6, 4, 3, 3))
    y = g.apply("conv2d", x, w, stride=2, padding=1)                 # [1, 6, 5, 5]
    y = g.apply("avgpool2d", y, kernel=3, stride=1, padding=1, count_include_pad=True)
    y = g.apply("maxpool2d", y, kernel=2, stride=1)                   # [1, 6, 4, 4]
    y = g.apply("tanh", g.apply("sigmoid", y))
    g.output("y", y)
    g.output("long", g.apply("transpose", g.input("wide", (2, 70000)), perm=(1, 0)))
    return g


def test_image_ops_and_long_copies():
    graph = image_graph()
    inputs = {"x": RNG.standard_normal((1, 4, 9, 9)).astype(np.float32),
              "w": RNG.standard_normal((6, 4, 3, 3)).astype(np.float32),
              "wide": RNG.standard_normal((2, 70000)).astype(np.float32)}
    outputs, lowered, _ = emulate(graph, inputs)
    assert_close(outputs, evaluate(graph, inputs), "fp32")
    assert dict(lowered.node("conv2d").layout)["WEIGHTS"] == "OIHW"
    assert dict(lowered.node("maxpool2d").layout)["REDUCE"] == "separable"


# ---- the library features the lowering added (against the kernels' own goldens) -------------
def test_library_epilogues_bands_masks_and_padded_pools():
    from emulator.kernel_runner import simulate
    from kernels.library import attention as att
    from kernels.library import conv, matmul
    from kernels.library.elementwise import UNARY_GOLDEN

    rng = np.random.default_rng(9)

    def f(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    # matmul_hoisted: result = gelu(lhsT.T @ rhs + bias), fp32 epilogue.
    lhsT, rhs, bias = f(200, 70), f(200, 300), f(300)
    got = simulate(matmul.matmul_hoisted)(lhsT, rhs, bias=bias, activation="gelu", TILE_N=128)
    golden = UNARY_GOLDEN["gelu"](matmul.matmul_golden(lhsT, rhs) + bias)
    np.testing.assert_allclose(got, golden, rtol=1e-4, atol=1e-4)
    # conv2d: a 160x160 image does not fit SBUF whole (double buffered, fp32), so it is loaded
    # in bands of input rows; asymmetric padding, IHWO weights, bias and relu epilogue.
    x, w, b = f(1, 3, 160, 160), f(8, 3, 3, 3), f(8)
    golden = np.maximum(conv.conv2d_golden(np.pad(x, ((0, 0), (0, 0), (1, 0), (2, 1))), w,
                                           stride=2) + b.reshape(1, 8, 1, 1), 0)
    got = simulate(conv.conv2d)(x, np.ascontiguousarray(w.transpose(1, 2, 3, 0)), stride=2,
                                padding=(1, 2, 0, 1), bias=b, activation="relu",
                                WEIGHTS="IHWO", TILE_M=4)
    np.testing.assert_allclose(got, golden, rtol=1e-4, atol=1e-4)
    # attention: an additive mask row per batch, fewer queries per tile.
    q, k, v = f(2, 2, 40, 16), f(2, 2, 40, 16), f(2, 2, 40, 16)
    mask = np.where(rng.random((2, 1, 1, 40)) > 0.3, 0.0, -1e4).astype(np.float32)
    got = simulate(att.attention)(q, k, v, mask=mask, Q_TILE=16)
    np.testing.assert_allclose(got, att.attention_golden(q, k, v, mask=mask), rtol=1e-4,
                               atol=1e-5)
    # Pools with padding: -inf for the maximum, zeros counted for the average.
    x = f(1, 3, 7, 7)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    got = simulate(conv.maxpool)(x, kernel_size=3, stride=2, padding=1)
    np.testing.assert_array_equal(got, conv.maxpool_golden(padded, 3, 2).astype(np.float32))
    got = simulate(conv.avgpool)(x, kernel_size=3, stride=2, padding=1, REDUCE="separable")
    zeros = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    np.testing.assert_allclose(got, conv.avgpool_golden(zeros, 3, 2), rtol=1e-5, atol=1e-6)
