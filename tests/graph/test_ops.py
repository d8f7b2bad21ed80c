"""The operator table: every op's reference against an independent numpy expression, attribute
schemas, shape/dtype inference errors, and the table's coverage by the other tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.graph import OPS, Graph, GraphError, Operator, TensorType, evaluate, format_ops
from kernels.graph.layout import TILING
from kernels.graph.ops import erf
from kernels.graph.partition import MIXING
from tests.graph import numpy_nets as nn

RNG = np.random.default_rng(5)


def f(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def ids(high, *shape, low=0):
    return RNG.integers(low, high, shape).astype(np.int32)


# op -> list of (inputs, attrs, expected(*inputs as float64) -> output or tuple of outputs)
CASES = {
    "matmul": [([f(2, 3, 5), f(5, 4)], {}, lambda x, w: x @ w)],
    "linear": [([f(3, 5), f(5, 4), f(4)], {"activation": "gelu"},
                lambda x, w, b: nn.gelu(x @ w + b)),
               ([f(3, 5), f(5, 4)], {"activation": "silu"},
                lambda x, w: (x @ w) / (1 + np.exp(-(x @ w))))],
    "batch_matmul": [([f(2, 1, 3, 5), f(4, 6, 5)], {"transpose_b": True},
                      lambda a, b: a @ np.swapaxes(b, -1, -2)),
                     ([f(3, 2, 5), f(3, 5, 4)], {}, lambda a, b: a @ b)],
    "conv2d": [([f(2, 4, 7, 6), f(6, 2, 3, 2), f(6)],
                {"stride": (2, 1), "padding": (1, 0, 2, 1), "dilation": (1, 2), "groups": 2},
                lambda x, w, b: nn.conv2d(x, w, b, (2, 1), (1, 0, 2, 1), (1, 2), 2)),
               ([f(1, 3, 5, 5), f(4, 3, 3, 3)], {"padding": 1},
                lambda x, w: nn.conv2d(x, w, padding=(1, 1, 1, 1)))],
    "attention": [([f(2, 2, 3, 4), f(2, 2, 5, 4), f(2, 2, 5, 3), f(2, 1, 3, 5)],
                   {"causal": True, "scale": 0.3},
                   lambda q, k, v, mask: nn.attention(q, k, v, mask, causal=True, scale=0.3)),
                  ([f(1, 4, 4), f(1, 6, 4), f(1, 6, 2)], {},
                   lambda q, k, v: nn.attention(q[None], k[None], v[None])[0])],
    "maxpool2d": [([f(2, 3, 7, 6)], {"kernel": 3, "stride": 2, "padding": 1},
                   lambda x: nn.pool2d(x, (3, 3), (2, 2), (1, 1, 1, 1), "max"))],
    "avgpool2d": [([f(1, 2, 6, 7)], {"kernel": (3, 2), "stride": (2, 2), "padding": (1, 1, 0, 0)},
                   lambda x: nn.pool2d(x, (3, 2), (2, 2), (1, 1, 0, 0), "avg")),
                  ([f(1, 2, 5, 5)], {"kernel": 3, "padding": 1, "count_include_pad": True},
                   lambda x: nn.pool2d(x, (3, 3), (1, 1), (1, 1, 1, 1), "avg", True))],
    "global_avgpool": [([f(2, 3, 4, 5)], {}, lambda x: x.mean(axis=(2, 3), keepdims=True))],
    "add": [([f(3, 1, 4), f(2, 4)], {}, np.add)],
    "sub": [([f(3, 4), f(4)], {}, np.subtract)],
    "mul": [([f(1, 4), f(3, 1)], {}, np.multiply)],
    "div": [([f(2, 3), f(2, 3) + 3.0], {}, np.divide)],
    "relu": [([f(3, 4)], {}, lambda x: np.where(x > 0, x, 0.0))],
    "gelu": [([f(3, 4) * 3], {}, nn.gelu),
             ([f(3, 4) * 3], {"approximate": "tanh"}, nn.gelu_tanh)],
    "silu": [([f(3, 4)], {}, lambda x: x / (1 + np.exp(-x)))],
    "tanh": [([f(3, 4)], {}, np.tanh)],
    "sigmoid": [([f(3, 4) * 5], {}, lambda x: 1 / (1 + np.exp(-x)))],
    "exp": [([f(3, 4)], {}, np.exp)],
    "erf": [([f(3, 4)], {}, np.vectorize(math.erf))],
    "softmax": [([f(3, 4, 2)], {"axis": 0}, lambda x: nn.softmax(x, 0))],
    "layernorm": [([f(3, 6), f(6), f(6)], {"eps": 1e-3},
                   lambda x, g, b: nn.layernorm(x, g, b, 1e-3)),
                  ([f(2, 6), f(6)], {}, lambda x, g: nn.layernorm(x, g, 0.0, 1e-5))],
    "rmsnorm": [([f(3, 6), f(6)], {},
                 lambda x, g: x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * g)],
    "add_layernorm": [([f(3, 6), f(3, 6), f(6), f(6)], {},
                       lambda a, b, g, c: (nn.layernorm(a + b, g, c, 1e-5), a + b))],
    "reshape": [([f(2, 3, 4)], {"shape": (4, -1)}, lambda x: x.reshape(4, 6))],
    "transpose": [([f(2, 3, 4)], {"perm": (2, 0, 1)}, lambda x: x.transpose(2, 0, 1))],
    "concat": [([f(2, 3), f(2, 1), f(2, 2)], {"axis": -1},
                lambda *xs: np.concatenate(xs, axis=1))],
    "split": [([f(2, 6)], {"axis": 1, "sizes": (1, 3, 2)},
               lambda x: (x[:, :1], x[:, 1:4], x[:, 4:]))],
    "slice": [([f(5, 6)], {"starts": (-4, 1), "ends": (100, 6), "axes": (0, 1), "steps": (1, 2)},
               lambda x: x[-4:, 1:6:2]),
              ([f(4, 6)], {"starts": (1,), "ends": (-1,), "axes": (-1,)},
               lambda x: x[:, 1:-1])],
    "gather": [([f(5, 3), ids(5, 2, 4)], {}, lambda t, i: t[i]),
               ([f(2, 6), ids(6, 3, low=-6)], {"axis": 1}, lambda t, i: t[:, i])],
    "all_reduce": [([f(2, 3)], {"group_size": 4}, lambda x: x)],
    "all_gather": [([f(2, 3)], {"group_size": 3, "axis": 1},
                    lambda x: np.concatenate([x] * 3, axis=1))],
    "reduce_scatter": [([f(4, 3)], {"group_size": 2}, lambda x: x[:2])],
}


def one_op_graph(op, arrays, attrs):
    g = Graph(op)
    values = [g.input(f"in{i}", a.shape, "int32" if a.dtype.kind == "i" else "fp32")
              for i, a in enumerate(arrays)]
    out = g.apply(op, *values, **attrs)
    for i, v in enumerate(out if isinstance(out, tuple) else (out,)):
        g.output(f"out{i}", v)
    return g, {f"in{i}": a for i, a in enumerate(arrays)}


CASE_LIST = [(op, *case) for op, cases in CASES.items() for case in cases]


@pytest.mark.parametrize("op, arrays, attrs, expected", CASE_LIST,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASE_LIST)])
def test_reference_matches_independent_numpy(op, arrays, attrs, expected):
    g, feed = one_op_graph(op, arrays, attrs)
    want = expected(*[a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays])
    want = want if isinstance(want, tuple) else (want,)
    out = evaluate(g, feed)
    assert len(out) == len(want)
    for i, w in enumerate(want):
        assert out[f"out{i}"].shape == np.shape(w)
        np.testing.assert_allclose(out[f"out{i}"], w, rtol=1e-5, atol=1e-6)


def test_every_op_is_exercised_and_declared_in_every_table():
    computing = {name for name, d in OPS.items() if d.reference is not None}
    assert computing == set(CASES)
    assert set(MIXING) == set(OPS)
    assert {d.tiling for d in OPS.values()} <= set(TILING)
    assert all(name in format_ops() for name in OPS)


def test_erf_is_accurate_to_fp32():
    x = np.concatenate([np.linspace(-6, 6, 2001), [1e-8, -3e-5, 0.4999, 0.5, 0.5001]])
    exact = np.array([math.erf(v) for v in x])
    nonzero = exact != 0
    assert erf(np.array([0.0]))[0] == 0.0
    assert np.max(np.abs(erf(x) - exact)[nonzero] / np.abs(exact[nonzero])) < 2e-7


# ---- the attribute schema ---------------------------------------------------------------------
def test_operator_normalises_attributes_and_fills_defaults():
    conv = Operator("conv2d", {"stride": 2, "padding": (1, 2)})
    assert conv.stride == (2, 2) and conv["padding"] == (1, 2, 1, 2)
    assert conv.groups == 1 and conv.dilation == (1, 1)
    assert conv == Operator("conv2d", {"padding": (1, 2, 1, 2), "stride": (2, 2)})
    assert hash(conv) == hash(Operator("conv2d", {"padding": (1, 2, 1, 2), "stride": (2, 2)}))
    assert conv.replace(groups=3).groups == 3
    assert str(Operator("relu")) == "relu"
    with pytest.raises(AttributeError):
        conv.kernel  # noqa: B018


@pytest.mark.parametrize("op, attrs, message", [
    ("conv2d", {"stride": 0}, "stride=.* must be >= 1"),
    ("conv2d", {"strides": 1}, "unknown attribute.*strides"),
    ("conv2d", {"padding": (1, 2, 3)}, "must have 4 values"),
    ("softmax", {"axis": 1.5}, "axis=1.5 must be an int"),
    ("softmax", {"axis": True}, "must be an int"),
    ("linear", {"activation": "swish"}, "must be one of"),
    ("reshape", {}, "attribute shape is required"),
    ("layernorm", {"eps": -1.0}, "must be >= 0"),
    ("frobnicate", {}, "unknown operator 'frobnicate'"),
    ("layernorm", {"eps": "small"}, "eps='small' must be a number"),
    ("attention", {"causal": 2}, "causal=2 must be a bool"),
    ("linear", {"activation": 3}, "activation=3 must be a string"),
    ("transpose", {"perm": 3}, "perm=3 must be a sequence of ints"),
    ("input", {"shape": (2,), "dtype": "fp64"}, "must be a dtype name"),
])
def test_operator_rejects_bad_attributes(op, attrs, message):
    with pytest.raises(GraphError, match=message):
        Operator(op, attrs)


def test_operator_rejects_a_repeated_attribute():
    with pytest.raises(GraphError, match="given twice"):
        Operator("softmax", (("axis", 0), ("axis", 1)))


# ---- inference --------------------------------------------------------------------------------
def infer(op, types, **attrs):
    return OPS[op].infer(Operator(op, attrs), tuple(TensorType(s, d) for s, d in types))


@pytest.mark.parametrize("op, types, attrs, message", [
    ("matmul", [((2, 3), "fp32"), ((4, 5), "fp32")], {}, "contraction mismatch"),
    ("matmul", [((2, 3), "fp32"), ((2, 3, 5), "fp32")], {}, "weight must be 2-D"),
    ("linear", [((2, 3), "fp32"), ((3, 5), "fp32"), ((4,), "fp32")], {}, "bias must be"),
    ("add", [((2, 3), "fp32"), ((2, 3), "bf16")], {}, "dtype clash"),
    ("add", [((2, 3), "fp32"), ((4,), "fp32")], {}, "do not broadcast"),
    ("relu", [((2,), "int32")], {}, "needs float inputs"),
    ("conv2d", [((1, 4, 5, 5), "fp32"), ((6, 3, 3, 3), "fp32")], {"groups": 3},
     "must divide by groups"),
    ("conv2d", [((1, 4, 5, 5), "fp32"), ((6, 3, 3, 3), "fp32")], {"groups": 2},
     "needs 2 input channels per group"),
    ("conv2d", [((1, 3, 2, 2), "fp32"), ((6, 3, 3, 3), "fp32")], {}, "larger than the padded"),
    ("maxpool2d", [((1, 1, 4, 4), "fp32")], {"kernel": 2, "padding": 2}, "smaller than kernel"),
    ("attention", [((1, 5, 4), "fp32"), ((1, 3, 4), "fp32"), ((1, 3, 4), "fp32")],
     {"causal": True}, "leaves rows empty"),
    ("attention", [((1, 2, 4), "fp32"), ((1, 3, 4), "fp32"), ((1, 3, 4), "fp32"),
                   ((1, 2, 2), "fp32")], {}, "does not broadcast to scores"),
    ("softmax", [((2, 3), "fp32")], {"axis": 2}, "out of range"),
    ("layernorm", [((2, 3), "fp32"), ((2,), "fp32")], {}, "scale/shift must be"),
    ("reshape", [((2, 3), "fp32")], {"shape": (4, -1)}, "cannot infer -1"),
    ("reshape", [((2, 3), "fp32")], {"shape": (-1, -1)}, "one -1"),
    ("transpose", [((2, 3), "fp32")], {"perm": (0, 0)}, "not a permutation"),
    ("concat", [((2, 3), "fp32"), ((3, 3), "fp32")], {"axis": 1}, "does not match"),
    ("split", [((2, 3), "fp32")], {"axis": 1, "sizes": (1, 1)}, "do not add up"),
    ("slice", [((2, 3), "fp32")], {"starts": (0,), "ends": (1, 2), "axes": (0,)},
     "one entry per sliced axis"),
    ("slice", [((2, 3), "fp32")], {"starts": (0, 0), "ends": (1, 1), "axes": (0, -2)},
     "sliced twice"),
    ("gather", [((4, 3), "fp32"), ((2,), "fp32")], {}, "indices must be integers"),
    ("matmul", [((), "fp32"), ((1, 2), "fp32")], {}, "at least one dimension"),
    ("batch_matmul", [((3,), "fp32"), ((3, 2), "fp32")], {}, "2 or more dimensions"),
    ("batch_matmul", [((2, 3), "fp32"), ((2, 3), "fp32")], {"transpose_b": False},
     "contraction mismatch"),
    ("conv2d", [((4, 5, 5), "fp32"), ((6, 4, 3, 3), "fp32")], {}, r"must be \[N,C,H,W\]"),
    ("conv2d", [((1, 4, 5, 5), "fp32"), ((6, 4, 3, 3), "fp32"), ((4,), "fp32")], {},
     r"bias must be \[6\]"),
    ("avgpool2d", [((1, 4, 4), "fp32")], {"kernel": 2}, r"must be \[N,C,H,W\]"),
    ("global_avgpool", [((1, 4), "fp32")], {}, r"must be \[N,C,H,W\]"),
    ("attention", [((4,), "fp32"), ((4,), "fp32"), ((4,), "fp32")], {}, "same rank >= 2"),
    ("attention", [((1, 2, 4), "fp32"), ((2, 3, 4), "fp32"), ((2, 3, 4), "fp32")], {},
     "leading .* dims differ"),
    ("attention", [((1, 2, 4), "fp32"), ((1, 3, 5), "fp32"), ((1, 3, 4), "fp32")], {},
     "head dims differ"),
    ("attention", [((1, 2, 4), "fp32"), ((1, 3, 4), "fp32"), ((1, 2, 4), "fp32")], {},
     "key counts differ"),
    ("rmsnorm", [((), "fp32"), ((1,), "fp32")], {}, "at least one dimension"),
    ("add_layernorm", [((2, 3), "fp32"), ((1, 3), "fp32"), ((3,), "fp32")], {},
     "residual operands differ"),
    ("concat", [((2, 3), "fp32"), ((2, 3), "bf16")], {"axis": 0}, "dtype clash"),
    ("reduce_scatter", [((3, 2), "fp32")], {"group_size": 2}, "does not divide"),
])
def test_inference_rejects_inconsistent_operands(op, types, attrs, message):
    with pytest.raises(GraphError, match=message):
        infer(op, types, **attrs)


def test_gather_rejects_out_of_range_indices_at_evaluation():
    g, feed = one_op_graph("gather", [f(3, 2), np.array([0, 3], np.int32)], {})
    with pytest.raises(GraphError, match="node gather: .*outside -3..2"):
        evaluate(g, feed)


def test_flop_counts():
    g = Graph()
    x = g.input("x", (4, 8, 16))
    y = g.apply("matmul", x, g.weight("w", (16, 32)))
    c = g.apply("conv2d", g.input("img", (1, 3, 8, 8)), g.weight("k", (4, 3, 3, 3)), padding=1)
    assert g.flops(y.node) == 2 * 4 * 8 * 16 * 32
    assert g.flops(c.node) == 2 * 3 * 3 * 3 * 4 * 8 * 8
    assert g.flops("x") == 0
