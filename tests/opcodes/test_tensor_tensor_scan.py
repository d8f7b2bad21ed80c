"""tensor_tensor_scan: per partition along the free axis, y[i] = (in0[i] <op0> y[i-1]) <op1>
in1[i] with y[-1] = initial (an immediate or a [P, 1] tile), on the Vector engine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isa import InstructionError, ProgramError, TensorTensorScan, psum, sbuf
from tests.conftest import TOLERANCE, assert_matches, rounded, run_instruction, validate_alone
from tests.strategies import FLOAT_DTYPES, INT_DTYPES, placed, random_values, seeds

OPS = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "max": np.maximum,
    "min": np.minimum,
}


def scan(in0: np.ndarray, in1: np.ndarray, initial: np.ndarray, op0: str, op1: str) -> np.ndarray:
    """The recurrence, one column at a time (in the operands' wide type)."""
    out = np.empty(np.broadcast_shapes(in0.shape, in1.shape), np.result_type(in0, in1, initial))
    carry = initial.reshape(-1)
    for i in range(in0.shape[1]):
        carry = OPS[op1](OPS[op0](in0[:, i], carry), in1[:, i])
        out[:, i] = carry
    return out


@st.composite
def scans(draw):
    rows, free = draw(st.integers(1, 32)), draw(st.integers(1, 32))
    integer = draw(st.booleans())
    dtypes = INT_DTYPES if integer else FLOAT_DTYPES
    in0, in1 = (draw(placed("tensor_tensor_scan", name, "vector", slot,
                            draw(st.sampled_from(dtypes)), rows, free))
                for slot, name in enumerate(("in0", "in1")))
    dst_dtypes = [d for d in dtypes if d.name in ("int32", "int16", "int8", "fp32", "bf16")]
    dst = draw(placed("tensor_tensor_scan", "dst", "vector", 2, draw(st.sampled_from(dst_dtypes)),
                      rows, free))
    initial = draw(st.one_of(
        st.integers(-2, 2).map(float) if integer else st.floats(-2, 2, width=32),
        placed("tensor_tensor_scan", "initial", "vector", 3, draw(st.sampled_from(dtypes)), rows,
               1)))
    ops = sorted(OPS)
    return TensorTensorScan(dst, in0, in1, initial, draw(st.sampled_from(ops)),
                            draw(st.sampled_from(ops)))


@given(scans(), seeds())
def test_scan_matches_the_recurrence(ts, seed):
    integer = not ts.in0.dtype.is_float
    wide = np.int64 if integer else np.float64

    def values(ap, offset):  # small magnitudes keep products of up to 32 steps bounded
        if integer:
            return random_values(ap.dtype, ap.shape, seed + offset, low=-2, high=2)
        return rounded(np.random.default_rng(seed + offset).uniform(-1, 1, ap.shape), ap.dtype)

    inputs = {"in0": values(ts.in0, 0), "in1": values(ts.in1, 1)}
    if isinstance(ts.initial, float):
        initial = np.full((ts.in0.partitions, 1), ts.initial, wide)
    else:
        inputs["initial"] = values(ts.initial, 2)
        initial = inputs["initial"].astype(wide).reshape(-1, 1)
    out = run_instruction(ts, inputs)["dst"]
    expected = scan(inputs["in0"].astype(wide).reshape(ts.in0.partitions, -1),
                    inputs["in1"].astype(wide).reshape(ts.in1.partitions, -1), initial,
                    ts.op0, ts.op1)
    # fp32 steps: each of the 2F roundings costs half an ulp of the largest carry so far
    steps = 2 * expected.shape[1]
    drift = steps * 2.0**-24 * (np.maximum.accumulate(np.abs(expected), axis=1) + 1.0)
    expected = rounded(expected, ts.dst.dtype)
    if integer:
        assert_matches(out.reshape(expected.shape), expected, ts.dst.dtype)
    else:
        rtol, atol = TOLERANCE[ts.dst.dtype.name]
        error = np.abs(out.reshape(expected.shape).astype(np.float64)
                       - expected.astype(np.float64))
        assert np.all(error <= rtol * np.abs(expected.astype(np.float64)) + drift + atol + 1e-6)


def test_integer_scans_keep_a_fractional_carry_until_the_write_rounds_it():
    # int32 tiles: carry = (in0 / carry) + in1 with initial 2 -> 3 / 2 + 0 = 1.5, then
    # 3 / 1.5 + 0 = 2.0, ...; the written values round half to even (1.5 -> 2), not truncate.
    in0 = np.array([[3, 3, 5]], np.int32)
    zeros = np.zeros_like(in0)
    divide = TensorTensorScan(sbuf(1, 3, "int32", offset=128), sbuf(1, 3, "int32"),
                              sbuf(1, 3, "int32", offset=64), 2.0, "divide", "add")
    out = run_instruction(divide, {"in0": in0, "in1": zeros})["dst"]
    np.testing.assert_array_equal(out, [[2, 2, 2]])  # carries 1.5, 2.0, 2.5
    # A bitwise second op takes the fractional carry rounded: 1.5 -> 2, & 3 = 2; 3 / 2 = 1.5
    # again -> 2; 5 / 2 = 2.5 -> 2.
    masked = TensorTensorScan(sbuf(1, 3, "int32", offset=128), sbuf(1, 3, "int32"),
                              sbuf(1, 3, "int32", offset=64), 2.0, "divide", "bitwise_and")
    out = run_instruction(masked, {"in0": in0, "in1": np.full_like(in0, 3)})["dst"]
    np.testing.assert_array_equal(out, [[2, 2, 2]])


def test_running_sum_and_decayed_sum():
    x = np.arange(1, 9, dtype=np.float32).reshape(2, 4)
    prefix = TensorTensorScan(sbuf(2, 4, "fp32", offset=128), sbuf(2, 4, "fp32"),
                              sbuf(2, 4, "fp32", offset=64), 0.0, "add", "add")
    out = run_instruction(prefix, {"in0": np.zeros_like(x), "in1": x})["dst"]
    np.testing.assert_array_equal(out, np.cumsum(x, axis=1))
    decay = TensorTensorScan(sbuf(2, 4, "fp32", offset=128), sbuf(2, 4, "fp32"),
                             sbuf(2, 4, "fp32", offset=64), 1.0, "multiply", "add")
    out = run_instruction(decay, {"in0": np.full_like(x, 0.5), "in1": x})["dst"]
    expected, carry = [], np.ones(2)
    for i in range(4):
        carry = 0.5 * carry + x[:, i]
        expected.append(carry)
    np.testing.assert_array_equal(out, np.stack(expected, axis=1))


# ---- validation ---------------------------------------------------------------------------
F32 = sbuf(4, 8, "fp32")
I32 = sbuf(4, 8, "int32", offset=64)


@pytest.mark.parametrize("args, message", [
    ((F32, F32, F32, 0.0, "plus", "add"), r"unknown ALU op op0='plus'"),
    ((F32, F32, F32, 0.0, "add", "times"), r"unknown ALU op op1='times'"),
    ((F32, F32, F32, 0.0, "bitwise_and", "add"), r"op0=bitwise_and needs integer tiles"),
    ((I32, I32, I32, 0.5, "bitwise_or", "add"),
     r"op0=bitwise_or needs an integer initial, got 0\.5"),
    ((F32, F32, sbuf(4, 4, "fp32"), 0.0, "add", "add"),
     r"in0 .* has shape \[4, 8\] but in1 .* has \[4, 4\]"),
    ((sbuf(2, 16, "fp32"), F32, F32, 0.0, "add", "add"),
     r"dst .* has shape \[2, 16\] but in0 .* has \[4, 8\]"),
    ((F32, F32, F32, sbuf(4, 2, "fp32", offset=256), "add", "add"),
     r"initial sbuf\[0:4\]\+256\[\[1,2\]\]:fp32 must be a per-partition \[4, 1\] tile"),
])
def test_record_errors(args, message):
    with pytest.raises(InstructionError, match=message):
        TensorTensorScan(*args)


@pytest.mark.parametrize("stream", ["gpsimd", "scalar", "tensor"])
def test_scan_runs_on_vector_only(stream):
    with pytest.raises(ProgramError, match=rf"tensor_tensor_scan runs on vector, not on {stream}"):
        validate_alone(TensorTensorScan(F32, F32, F32, 0.0, "add", "add"), stream)


def test_scan_operand_out_of_psum():
    scan_op = TensorTensorScan(F32, F32, psum(4, 8, offset=16 * 1024 - 8), 0.0, "add", "add")
    with pytest.raises(ProgramError, match=r"tensor_tensor_scan operand in1: .*bytes "
                                           r"16376\.\.16407 fall outside the 16384-byte psum"):
        validate_alone(scan_op)
