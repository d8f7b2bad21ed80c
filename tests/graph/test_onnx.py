"""ONNX import against onnx.reference.ReferenceEvaluator, on models built here with
onnx.helper (no downloads)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from kernels.graph import GraphError, compile, evaluate  # noqa: E402
from kernels.graph.onnx_import import CONVERTERS, OnnxImportError, load_onnx  # noqa: E402

RNG = np.random.default_rng(21)
FLOAT = TensorProto.FLOAT


def f(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def make_model(nodes, inputs, outputs, initializers=None, opset=17):
    """inputs / outputs: {name: (elem_type, shape)}; initializers: {name: array}."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()],
        [numpy_helper.from_array(a, n) for n, a in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def assert_matches_reference(model, feed, rtol=1e-5, atol=1e-6, compiled=False):
    expected = ReferenceEvaluator(model).run(None, feed)
    g = load_onnx(model)
    if compiled:
        g = compile(g, "inf2")
    out = evaluate(g, feed)
    for info, want in zip(model.graph.output, expected):
        np.testing.assert_allclose(out[info.name], want, rtol=rtol, atol=atol)
    return g


def test_a_small_network_matches_the_onnx_reference_evaluator():
    """MatMul, Add, Relu, Softmax, LayerNormalization, Conv, Reshape, Transpose."""
    nodes = [
        helper.make_node("Conv", ["X", "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Reshape", ["relu", "shape"], ["rows"]),
        helper.make_node("Transpose", ["rows"], ["tokens"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["tokens", "W2"], ["proj"]),
        helper.make_node("Add", ["proj", "b2"], ["biased"]),
        helper.make_node("LayerNormalization", ["biased", "gamma", "beta"], ["normed"],
                         epsilon=1e-5),
        helper.make_node("Softmax", ["normed"], ["Y"], axis=-1),
    ]
    inits = {"W": f(4, 3, 3, 3), "B": f(4), "shape": np.array([2, 4, 64], np.int64),
             "W2": f(4, 16), "b2": f(16), "gamma": f(16), "beta": f(16)}
    model = make_model(nodes, {"X": (FLOAT, [2, 3, 8, 8])}, {"Y": (FLOAT, [2, 64, 16])}, inits)
    feed = {"X": f(2, 3, 8, 8)}
    g = assert_matches_reference(model, feed)
    assert [g.op(n).op for n in g.nodes if g.op(n).op != "constant"] == [
        "input", "conv2d", "relu", "reshape", "transpose", "matmul", "add", "layernorm",
        "softmax"]
    compiled = assert_matches_reference(model, feed, compiled=True)
    assert compiled.meta["fusions"] == {"linear": 1}


def single(op_type, inputs, out_shape, attrs=None, inits=None, n_out=1, opset=17,
           out_type=FLOAT):
    names = list(inputs) + list(inits or {})
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op_type, names, outs, **(attrs or {}))
    shapes = out_shape if n_out > 1 else [out_shape]
    model = make_model([node], {n: (FLOAT if a.dtype == np.float32 else TensorProto.INT64,
                                    list(a.shape)) for n, a in inputs.items()},
                       {o: (out_type, s) for o, s in zip(outs, shapes)}, inits, opset)
    return model, dict(inputs)


CASES = {
    "Gemm": lambda: single("Gemm", {"a": f(5, 3)}, [5, 4],
                           {"transB": 1, "alpha": 0.5, "beta": 2.0},
                           {"b": f(4, 3), "c": f(4)}),
    "Gemm-transA": lambda: single("Gemm", {"a": f(3, 5)}, [5, 4], {"transA": 1},
                                  {"b": f(3, 4)}),
    "MatMul-batched": lambda: single("MatMul", {"a": f(2, 3, 4), "b": f(2, 4, 5)}, [2, 3, 5]),
    "Sub": lambda: single("Sub", {"a": f(2, 3), "b": f(3)}, [2, 3]),
    "Mul": lambda: single("Mul", {"a": f(2, 1), "b": f(1, 3)}, [2, 3]),
    "Div": lambda: single("Div", {"a": f(2, 3), "b": f(2, 3) + 4}, [2, 3]),
    "Tanh": lambda: single("Tanh", {"x": f(3, 4)}, [3, 4]),
    "Sigmoid": lambda: single("Sigmoid", {"x": f(3, 4) * 4}, [3, 4]),
    "Exp": lambda: single("Exp", {"x": f(3, 4)}, [3, 4]),
    "Erf": lambda: single("Erf", {"x": f(3, 4)}, [3, 4]),
    "Gelu": lambda: single("Gelu", {"x": f(3, 4) * 2}, [3, 4], opset=20),
    "Gelu-tanh": lambda: single("Gelu", {"x": f(3, 4) * 2}, [3, 4], {"approximate": "tanh"},
                                opset=20),
    "Softmax-axis1": lambda: single("Softmax", {"x": f(2, 3, 4)}, [2, 3, 4], {"axis": 1}),
    "LayerNormalization-no-bias": lambda: single("LayerNormalization", {"x": f(3, 6)}, [3, 6],
                                                 {"epsilon": 1e-3}, {"s": f(6)}),
    "Conv-strided-grouped": lambda: single(
        "Conv", {"x": f(1, 4, 9, 8)}, [1, 6, 4, 3],
        {"strides": [2, 2], "pads": [0, 1, 1, 0], "group": 2, "dilations": [1, 2]},
        {"w": f(6, 2, 3, 3)}),
    "Conv-same-upper": lambda: single("Conv", {"x": f(1, 2, 7, 7)}, [1, 3, 4, 4],
                                      {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
                                      {"w": f(3, 2, 3, 3)}),
    "MaxPool": lambda: single("MaxPool", {"x": f(1, 2, 7, 7)}, [1, 2, 4, 4],
                              {"kernel_shape": [3, 3], "strides": [2, 2],
                               "pads": [1, 1, 1, 1]}),
    "AveragePool": lambda: single("AveragePool", {"x": f(1, 2, 6, 6)}, [1, 2, 3, 3],
                                  {"kernel_shape": [3, 3], "strides": [2, 2],
                                   "pads": [1, 1, 0, 0]}),
    "AveragePool-count-pad": lambda: single("AveragePool", {"x": f(1, 2, 5, 5)}, [1, 2, 5, 5],
                                            {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                             "count_include_pad": 1}),
    "GlobalAveragePool": lambda: single("GlobalAveragePool", {"x": f(2, 3, 4, 5)},
                                        [2, 3, 1, 1]),
    "Reshape-zero": lambda: single("Reshape", {"x": f(2, 3, 4)}, [2, 12], {},
                                   {"s": np.array([0, -1], np.int64)}),
    "Transpose-default": lambda: single("Transpose", {"x": f(2, 3, 4)}, [4, 3, 2]),
    "Concat": lambda: single("Concat", {"a": f(2, 3), "b": f(2, 1)}, [2, 4], {"axis": 1}),
    "Split": lambda: single("Split", {"x": f(2, 6)}, [[2, 1], [2, 5]], {"axis": 1},
                            {"s": np.array([1, 5], np.int64)}, n_out=2),
    "Split-equal": lambda: single("Split", {"x": f(6, 2)}, [[3, 2], [3, 2]], n_out=2),
    "Slice": lambda: single("Slice", {"x": f(5, 6)}, [3, 2], {},
                            {"st": np.array([1, -5], np.int64),
                             "en": np.array([2**62, 5], np.int64),
                             "ax": np.array([0, 1], np.int64),
                             "sp": np.array([2, 3], np.int64)}),
    "Gather": lambda: single("Gather", {"t": f(6, 3), "i": np.array([[0, 5], [-1, 2]])},
                             [2, 2, 3]),
    "Gather-axis1": lambda: single("Gather", {"t": f(2, 6)}, [2, 3], {"axis": 1},
                                   {"i": np.array([4, 0, 4], np.int64)}),
    "Flatten": lambda: single("Flatten", {"x": f(2, 3, 4)}, [6, 4], {"axis": 2}),
    "Squeeze": lambda: single("Squeeze", {"x": f(2, 1, 3, 1)}, [2, 3, 1], {},
                              {"ax": np.array([1], np.int64)}),
    "Unsqueeze": lambda: single("Unsqueeze", {"x": f(2, 3)}, [1, 2, 3, 1], {},
                                {"ax": np.array([0, -1], np.int64)}),
    "Identity": lambda: single("Identity", {"x": f(2, 3)}, [2, 3]),
}


@pytest.mark.parametrize("name", CASES)
def test_single_operators_match_the_reference_evaluator(name):
    model, feed = CASES[name]()
    assert_matches_reference(model, feed)


def test_every_converter_is_exercised():
    used = {n.split("-")[0] for n in CASES} | {"MatMul", "Add", "Relu", "Softmax",
                                               "LayerNormalization", "Conv", "Reshape",
                                               "Transpose", "Constant"}
    assert used == set(CONVERTERS)


def test_constant_nodes_and_initializers_become_constants():
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(f(3), "v")),
             helper.make_node("Constant", [], ["k"], value_float=2.0),
             helper.make_node("Mul", ["x", "c"], ["m"]),
             helper.make_node("Mul", ["m", "k"], ["y"])]
    model = make_model(nodes, {"x": (FLOAT, [2, 3])}, {"y": (FLOAT, [2, 3])})
    g = assert_matches_reference(model, {"x": f(2, 3)})
    assert sum(g.op(n).op == "constant" for n in g.nodes) == 2


def test_unsupported_operators_are_all_listed_with_counts():
    nodes = [helper.make_node("Cos", ["x"], ["a"]), helper.make_node("Abs", ["a"], ["b"]),
             helper.make_node("Cos", ["b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    model = make_model(nodes, {"x": (FLOAT, [2])}, {"y": (FLOAT, [2])})
    with pytest.raises(OnnxImportError, match=r"unsupported ONNX operators: Abs \(x1\), Cos "
                                              r"\(x2\); supported: Add, AveragePool"):
        load_onnx(model)


def test_unsupported_variants_of_supported_operators_name_the_node():
    model, _ = single("MaxPool", {"x": f(1, 1, 4, 4)}, [1, 1, 2, 2],
                      {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1})
    model.graph.node[0].name = "pool1"
    with pytest.raises(OnnxImportError, match="MaxPool 'pool1': ceil_mode != 0"):
        load_onnx(model)
    node = helper.make_node("Reshape", ["x", "s"], ["y"], name="dyn")
    model = make_model([node], {"x": (FLOAT, [2, 3]), "s": (TensorProto.INT64, [2])},
                       {"y": (FLOAT, [3, 2])})
    with pytest.raises(OnnxImportError, match="Reshape 'dyn': the shape must be a constant"):
        load_onnx(model)
    model, _ = single("Gather", {"t": f(6, 3)}, [1, 3], {}, {"i": np.array([2**40], np.int64)})
    with pytest.raises(OnnxImportError, match="int64 tensor 'i' holds values outside int32"):
        load_onnx(model)
    model, _ = single("Add", {"a": f(2, 3), "b": f(4)}, [2, 3])
    with pytest.raises(GraphError, match="do not broadcast"):
        load_onnx(model)


CONVERTER_ERRORS = {
    "only the last axis": lambda: single("Softmax", {"x": f(2, 3, 4)}, [2, 3, 4], {"axis": 1},
                                         opset=11),
    "only axis=-1": lambda: single("LayerNormalization", {"x": f(3, 6)}, [3, 6], {"axis": 0},
                                   {"s": f(3, 6)}),
    "Mean / InvStdDev": lambda: single("LayerNormalization", {"x": f(3, 6)}, [[3, 6], [3, 1]],
                                       {}, {"s": f(6)}, n_out=2),
    "only 2-D convolutions": lambda: single("Conv", {"x": f(1, 2, 5)}, [1, 3, 3], {},
                                            {"w": f(3, 2, 3)}),
    "auto_pad 'FOO' is unknown": lambda: single("Conv", {"x": f(1, 2, 5, 5)}, [1, 3, 3, 3],
                                                {"auto_pad": "FOO"}, {"w": f(3, 2, 3, 3)}),
    "only 2-D pooling": lambda: single("MaxPool", {"x": f(1, 2, 5)}, [1, 2, 4],
                                       {"kernel_shape": [2]}),
    "dilations and the Indices": lambda: single("MaxPool", {"x": f(1, 1, 6, 6)}, [1, 1, 4, 4],
                                                {"kernel_shape": [2, 2], "dilations": [2, 2]}),
    "negative steps": lambda: single("Slice", {"x": f(4)}, [2], {},
                                     {"st": np.array([3], np.int64),
                                      "en": np.array([0], np.int64),
                                      "ax": np.array([0], np.int64),
                                      "sp": np.array([-1], np.int64)}),
    "1-D second operands": lambda: single("MatMul", {"a": f(2, 3), "b": f(3)}, [2]),
    "are not all 1": lambda: single("Squeeze", {"x": f(2, 3)}, [3], {},
                                    {"ax": np.array([0], np.int64)}),
}


@pytest.mark.parametrize("message", CONVERTER_ERRORS)
def test_unsupported_variants_are_reported(message):
    model, _ = CONVERTER_ERRORS[message]()
    with pytest.raises(OnnxImportError, match=message):
        load_onnx(model)


def test_operators_of_other_domains_are_unsupported():
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain="com.microsoft")
    graph = helper.make_graph([node], "ms", [helper.make_tensor_value_info("a", FLOAT, [2, 2]),
                                             helper.make_tensor_value_info("b", FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", FLOAT, [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(OnnxImportError, match=r"com.microsoft:FusedMatMul \(x1\)"):
        load_onnx(model)


def test_symbolic_dims_need_input_shapes(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    model = make_model([node], {"x": (FLOAT, ["batch", 3])}, {"y": (FLOAT, ["batch", 3])})
    with pytest.raises(OnnxImportError, match=r"input 'x' has symbolic dims \[None, 3\]"):
        load_onnx(model)
    path = tmp_path / "relu.onnx"
    onnx.save(model, path)
    g = load_onnx(str(path), input_shapes={"x": (5, 3)})
    assert g.graph_inputs["x"].shape == (5, 3)
    with pytest.raises(OnnxImportError, match="not inputs"):
        load_onnx(path, input_shapes={"x": (5, 3), "z": (1,)})


def test_a_missing_onnx_package_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="optional dependency `onnx`: pip install"):
        load_onnx("model.onnx")
