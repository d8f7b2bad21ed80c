"""activation: dst = func(src * scale + bias) on the Scalar engine, optionally add-reducing the
result into reduce[P, 1].  References are float64 numpy (gelu from math.erf, sigmoid and silu
from tanh), so they share no code with isa.semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isa import Activation, InstructionError, ProgramError, psum, sbuf
from isa.instructions import ACTIVATIONS
from tests.conftest import TOLERANCE, rounded, run_instruction, validate_alone
from tests.strategies import FLOAT_DTYPES, placed, random_values, seeds

_erf = np.vectorize(math.erf, otypes=[np.float64])

REFERENCE = {
    "identity": lambda x: x,
    "copy": lambda x: x,
    "exp": np.exp,
    "log": np.log,
    "tanh": np.tanh,
    "sigmoid": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
    "relu": lambda x: np.where(x > 0, x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "gelu_apprx_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi)
                                                          * (x + 0.044715 * x**3))),
    "silu": lambda x: x * 0.5 * (1.0 + np.tanh(0.5 * x)),
    "sqrt": np.sqrt,
    "rsqrt": lambda x: x**-0.5,
    "reciprocal": lambda x: 1.0 / x,
    "square": lambda x: x * x,
    "abs": np.abs,
}
POSITIVE_DOMAIN = {"log", "sqrt", "rsqrt", "reciprocal"}
OUT_DTYPES = [d for d in FLOAT_DTYPES if d.name in ("fp32", "bf16", "fp16")]


def test_reference_covers_every_activation():
    assert set(REFERENCE) == set(ACTIVATIONS)


@st.composite
def activations(draw, func: str):
    rows, free = draw(st.integers(1, 32)), draw(st.integers(1, 48))
    src = draw(placed("activation", "src", "scalar", 0, draw(st.sampled_from(FLOAT_DTYPES)),
                      rows, free))
    dst = draw(placed("activation", "dst", "scalar", 1, draw(st.sampled_from(OUT_DTYPES)),
                      rows, free))
    scale = draw(st.one_of(st.floats(0.25, 1.5, width=32),
                           placed("activation", "scale", "scalar", 2, "fp32", rows, 1)))
    bias = draw(st.one_of(st.none(), placed("activation", "bias", "scalar", 3,
                                            draw(st.sampled_from(OUT_DTYPES)), rows, 1)))
    reduce = draw(st.one_of(st.none(), placed("activation", "reduce", "scalar", 4, "fp32",
                                              rows, 1)))
    return Activation(dst, src, func, scale, bias, reduce)


@pytest.mark.parametrize("func", ACTIVATIONS)
@settings(max_examples=12)
@given(data=st.data(), seed=seeds())
def test_activation_matches_numpy(func, data, seed):
    act = data.draw(activations(func))
    rng = np.random.default_rng(seed)
    positive = func in POSITIVE_DOMAIN
    src = random_values(act.src.dtype, act.src.shape, seed, scale=1.0)
    if positive:
        src = rounded(np.abs(src.astype(np.float32)) + 0.25, act.src.dtype)
    inputs = {"src": src}
    scale = np.float64(act.scale) if isinstance(act.scale, float) else None
    if scale is None:
        inputs["scale"] = rounded(rng.uniform(0.25, 1.5, act.scale.shape), "fp32")
        scale = inputs["scale"].astype(np.float64).reshape(-1, 1)
    pre = src.astype(np.float64).reshape(act.src.partitions, -1) * scale
    if act.bias is not None:
        low = 0.0 if positive else -1.0
        inputs["bias"] = rounded(rng.uniform(low, 1.0, act.bias.shape), act.bias.dtype)
        pre = pre + inputs["bias"].astype(np.float64).reshape(-1, 1)
    outputs = run_instruction(act, inputs)
    expected = REFERENCE[func](pre)
    rtol, atol = TOLERANCE[act.dst.dtype.name]
    # fp32 evaluation of the pre-activation and of the function costs a few fp32 ulps more.
    rtol, atol = max(rtol, 1e-5), max(atol, 2e-6)
    np.testing.assert_allclose(outputs["dst"].reshape(expected.shape).astype(np.float64),
                               rounded(expected, act.dst.dtype).astype(np.float64),
                               rtol=rtol, atol=atol)
    if act.reduce is not None:
        # an fp32 sum of fp32 values: error within a few ulps of the sum of magnitudes
        error = np.abs(outputs["reduce"].reshape(-1, 1).astype(np.float64)
                       - expected.sum(axis=1, keepdims=True))
        assert np.all(error <= 1e-5 * np.abs(expected).sum(axis=1, keepdims=True) + 1e-6)


def test_activation_reads_and_writes_psum():
    act = Activation(psum(4, 8, offset=2048), psum(4, 8), "exp", 0.5)
    src = np.linspace(-2, 2, 32, dtype=np.float32).reshape(4, 8)
    out = run_instruction(act, {"src": src})["dst"]
    np.testing.assert_allclose(out, np.exp(0.5 * src.astype(np.float64)), rtol=1e-6)


# ---- validation ---------------------------------------------------------------------------
SRC, DST = sbuf(4, 8, "fp32"), sbuf(4, 8, "fp32", offset=64)


@pytest.mark.parametrize("kwargs, message", [
    (dict(func="cube"), r"unknown activation 'cube'; supported: identity, copy, exp, log"),
    (dict(dst=sbuf(4, 16, "fp32", offset=64)),
     r"dst sbuf\[0:4\]\+64\[\[1,16\]\]:fp32 has shape \[4, 16\] but src "
     r"sbuf\[0:4\]\+0\[\[1,8\]\]:fp32 has \[4, 8\]"),
    (dict(dst=sbuf(8, 4, "fp32", offset=64)), r"has shape \[8, 4\] but src .* has \[4, 8\]"),
    (dict(bias=sbuf(4, 2, "fp32", offset=128)),
     r"bias sbuf\[0:4\]\+128\[\[1,2\]\]:fp32 must be a per-partition \[4, 1\] tile"),
    (dict(scale=sbuf(8, 1, "fp32", offset=128)), r"scale .* must be a per-partition \[4, 1\]"),
    (dict(reduce=sbuf(4, 8, "fp32", offset=128)), r"reduce .* must be a per-partition \[4, 1\]"),
])
def test_record_errors(kwargs, message):
    fields = dict(dst=DST, src=SRC, func="exp")
    fields.update(kwargs)
    with pytest.raises(InstructionError, match=message):
        Activation(**fields)


@pytest.mark.parametrize("act, stream, message", [
    (Activation(DST, SRC, "exp"), "vector", r"activation runs on scalar, not on vector"),
    (Activation(DST, SRC, "exp"), "gpsimd", r"activation runs on scalar, not on gpsimd"),
    (Activation(sbuf(4, 8, "fp32", offset=192 * 1024 - 16), SRC, "exp"), "scalar",
     r"activation operand dst: .*bytes 196592\.\.196623 fall outside the 196608-byte sbuf"),
    (Activation(sbuf((32, 48), 8, "fp32"), sbuf((64, 48), 8, "fp32"), "relu"), "scalar",
     r"activation operand dst: an operand of 48 partitions may start at partition \(0, 64\), "
     r"not 32"),
])
def test_validation_errors(act, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(act, stream)
