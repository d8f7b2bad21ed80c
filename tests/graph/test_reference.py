"""Reference evaluation: dtype policies and their rounding points, and input validation."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from isa.dtypes import bf16, cast
from kernels.graph import OPS, Graph, GraphError, Operator, evaluate
from kernels.graph.rewrite import set_precision

RNG = np.random.default_rng(9)


def chain() -> Graph:
    g = Graph("chain", seed=1)
    x = g.input("x", (4, 16))
    h = g.apply("matmul", x, g.weight("w", (16, 8), scale=0.3))
    h = g.apply("gelu", g.apply("add", h, g.weight("b", (8,))))
    g.output("y", g.apply("softmax", h))
    return g


def bf16_round(x):
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def test_bf16_policy_rounds_inputs_constants_and_every_op_output():
    g = chain()
    x = RNG.standard_normal((4, 16)).astype(np.float32)
    out = evaluate(g, {"x": x}, "bf16")["y"]
    assert out.dtype == ml_dtypes.bfloat16
    # the same math written out, rounding where the policy says tensors are stored
    w, b = bf16_round(g.constant_value("w")), bf16_round(g.constant_value("b"))
    ref = OPS["gelu"].reference
    h = bf16_round(bf16_round(x) @ w)
    h = bf16_round(h + b)
    h = bf16_round(ref(Operator("gelu"), [h])[0])
    y = bf16_round(OPS["softmax"].reference(Operator("softmax"), [h])[0])
    np.testing.assert_array_equal(out.astype(np.float32), y)


def test_fp32_policy_keeps_fp32_and_differs_from_bf16_by_rounding_only():
    g = chain()
    x = RNG.standard_normal((4, 16)).astype(np.float32)
    full = evaluate(g, {"x": x})["y"]
    assert full.dtype == np.float32
    np.testing.assert_allclose(evaluate(g, {"x": x}, "bf16")["y"].astype(np.float32), full,
                               rtol=2e-2, atol=1e-3)


def test_declared_policy_uses_each_tensors_dtype():
    g = set_precision(chain(), "bf16")
    x = RNG.standard_normal((4, 16)).astype(np.float32)
    declared = evaluate(g, {"x": x}, "declared")["y"]
    assert declared.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(declared, evaluate(chain(), {"x": x}, "bf16")["y"])
    assert evaluate(chain(), {"x": x}, "declared")["y"].dtype == np.float32


def test_a_fused_operator_rounds_only_its_output():
    g = Graph()
    x = g.input("x", (3, 8))
    w, b = g.weight("w", (8, 5), scale=0.5), g.weight("b", (5,))
    g.output("y", g.apply("linear", x, w, b, activation="tanh"))
    xv = RNG.standard_normal((3, 8)).astype(np.float32)
    out = evaluate(g, {"x": xv}, "bf16")["y"]
    pre = bf16_round(xv) @ bf16_round(g.constant_value("w")) + bf16_round(g.constant_value("b"))
    np.testing.assert_array_equal(out, cast(np.tanh(pre).astype(np.float32), bf16))


def test_integer_tensors_are_never_rounded():
    g = Graph()
    table = g.constant(np.arange(1000, 1010, dtype=np.int32), "table")
    ids = g.input("ids", (3,), "int32")
    g.output("rows", g.apply("gather", table, ids))
    g.output("ids", ids)
    out = evaluate(g, {"ids": np.array([9, 0, -1], np.int64)}, "bf16")
    assert out["rows"].dtype == np.int32
    np.testing.assert_array_equal(out["rows"], [1009, 1000, 1009])  # 1009 is not a bf16 value


@pytest.mark.parametrize("feed, message", [
    ({}, r"inputs missing \['x'\]"),
    ({"x": np.zeros((4, 16)), "z": np.zeros(1)}, r"unknown \['z'\]"),
    ({"x": np.zeros((16, 4))}, "has shape"),
    ({"x": np.zeros((4, 16), np.int32)}, "does not fit"),
])
def test_evaluate_rejects_bad_inputs(feed, message):
    with pytest.raises(GraphError, match=message):
        evaluate(chain(), feed)


@pytest.mark.parametrize("policy", ["int8", "fp64"])
def test_evaluate_rejects_unknown_policies(policy):
    with pytest.raises(GraphError, match="dtype_policy"):
        evaluate(chain(), {"x": np.zeros((4, 16))}, policy)


@pytest.mark.parametrize("reference, message", [
    (lambda op, xs: (xs[0][:1],), r"node relu: \(relu\) reference output 0 has shape \(1,\), "
                                  r"inference says fp32\[3\]"),
    (lambda op, xs: (xs[0], xs[0]), r"node relu: \(relu\) reference gave 2 outputs for 1"),
])
def test_a_reference_that_disagrees_with_inference_is_caught(monkeypatch, reference, message):
    from dataclasses import replace
    g = Graph()
    g.output("y", g.apply("relu", g.input("x", (3,))))
    monkeypatch.setitem(OPS, "relu", replace(OPS["relu"], reference=reference))
    with pytest.raises(GraphError, match=message):
        evaluate(g, {"x": np.zeros(3, np.float32)})


def test_collectives_have_single_device_semantics():
    g = Graph()
    x = g.input("x", (4, 2))
    g.output("reduced", g.apply("all_reduce", x, group_size=4))
    g.output("gathered", g.apply("all_gather", x, group_size=2, axis=1))
    g.output("scattered", g.apply("reduce_scatter", x, group_size=4, axis=0))
    xv = RNG.standard_normal((4, 2)).astype(np.float32)
    out = evaluate(g, {"x": xv})
    np.testing.assert_array_equal(out["reduced"], xv)
    np.testing.assert_array_equal(out["gathered"], np.concatenate([xv, xv], axis=1))
    np.testing.assert_array_equal(out["scattered"], xv[:1])
