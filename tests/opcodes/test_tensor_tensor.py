"""tensor_tensor: dst = in0 <op> in1 element-wise on the Vector or GpSimd engine.

Integer operands compute exactly (int64) and saturate on write, so they are compared exactly;
float results are compared with the destination dtype's tolerance against float64 numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isa import InstructionError, ProgramError, TensorTensor, psum, sbuf
from isa.instructions import ALU_OPS, BITWISE_OPS
from tests.conftest import assert_matches, rounded, run_instruction, validate_alone
from tests.strategies import FLOAT_DTYPES, INT_DTYPES, placed, random_values, seeds

REFERENCE = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,  # true division, also for integers (rounded on write)
    "max": lambda a, b: np.where(a >= b, a, b),
    "min": lambda a, b: np.where(a <= b, a, b),
    "pow": lambda a, b: a**b,
    "abs_max": lambda a, b: np.maximum(np.abs(a), np.abs(b)),
    "bypass": lambda a, b: a,
    "is_equal": lambda a, b: (a == b) * 1,
    "not_equal": lambda a, b: (a != b) * 1,
    "is_ge": lambda a, b: (a >= b) * 1,
    "is_gt": lambda a, b: (a > b) * 1,
    "is_le": lambda a, b: (a <= b) * 1,
    "is_lt": lambda a, b: (a < b) * 1,
    "bitwise_and": lambda a, b: a & b,
    "bitwise_or": lambda a, b: a | b,
    "bitwise_xor": lambda a, b: a ^ b,
    "logical_shift_left": lambda a, b: a << b,
    "logical_shift_right": lambda a, b: a >> b,
}


def test_reference_covers_every_alu_op():
    assert set(REFERENCE) == set(ALU_OPS)


def operand_values(op: str, which: str, dt, shape, seed: int) -> np.ndarray:
    """Inputs inside each op's domain: positive bases and small exponents for pow, non-zero
    divisors, non-negative values and shifts of 0..3 for the bit operations."""
    if op in BITWISE_OPS:
        high = 3 if which == "in1" and "shift" in op else 15
        return random_values(dt, shape, seed, low=0, high=high)
    if op == "pow":
        if which == "in1":
            return random_values(dt, shape, seed, low=0, high=3) if not dt.is_float else \
                rounded(np.random.default_rng(seed).uniform(-2, 2, shape), dt)
        return random_values(dt, shape, seed, low=1, high=5) if not dt.is_float else \
            rounded(np.random.default_rng(seed).uniform(0.5, 3, shape), dt)
    values = random_values(dt, shape, seed, low=-20, high=20)
    if op == "divide" and which == "in1":
        wide = values.astype(np.float64)
        values = rounded(np.where(np.abs(wide) < 0.5, np.copysign(1.0, wide), wide), dt)
    if dt.is_float and op.startswith("is_") or op == "not_equal":
        values[..., ::3] = 1  # make equality happen
    return values


@st.composite
def tensor_tensors(draw, op: str):
    engine = draw(st.sampled_from(["vector", "gpsimd"]))
    rows, free = draw(st.integers(1, 32)), draw(st.integers(1, 64))
    integer = op in BITWISE_OPS or draw(st.booleans())
    # integer results are exact only if everything is integer; float results take any inputs
    in_dtypes = INT_DTYPES if integer else INT_DTYPES + FLOAT_DTYPES
    dst_dtypes = INT_DTYPES if integer else FLOAT_DTYPES
    if op == "pow" or (integer and op == "divide"):
        dst_dtypes = [d for d in dst_dtypes if d.name in ("fp32", "int32", "int16")]
    in0, in1 = (draw(placed("tensor_tensor", name, engine, slot,
                            draw(st.sampled_from(in_dtypes)), rows, free))
                for slot, name in enumerate(("in0", "in1")))
    dst = draw(placed("tensor_tensor", "dst", engine, 2, draw(st.sampled_from(dst_dtypes)),
                      rows, free))
    return engine, TensorTensor(dst, in0, in1, op)


@pytest.mark.parametrize("op", ALU_OPS)
@settings(max_examples=12)
@given(data=st.data(), seed=seeds())
def test_tensor_tensor_matches_numpy(op, data, seed):
    engine, tt = data.draw(tensor_tensors(op))
    in0 = operand_values(op, "in0", tt.in0.dtype, tt.in0.shape, seed)
    in1 = operand_values(op, "in1", tt.in1.dtype, tt.in1.shape, seed + 1)
    out = run_instruction(tt, {"in0": in0, "in1": in1}, engine)["dst"]
    wide = np.int64 if not (tt.in0.dtype.is_float or tt.in1.dtype.is_float) else np.float64
    a = in0.astype(wide).reshape(tt.in0.partitions, -1)
    b = in1.astype(wide).reshape(tt.in1.partitions, -1)
    expected = rounded(REFERENCE[op](a, b), tt.dst.dtype)
    assert_matches(out.reshape(expected.shape), expected, tt.dst.dtype)


def test_bit_operations_on_int32_words():
    a = np.array([[0x0F0F0F0F, 0x7FFFFFFF, 0, 12345]], np.int32)
    b = np.array([[0x00FF00FF, 0x0000FFFF, 0x7FFFFFFF, 4]], np.int32)
    for op, expected in [("bitwise_and", a & b), ("bitwise_or", a | b), ("bitwise_xor", a ^ b),
                         ("logical_shift_right", a >> b)]:
        tt = TensorTensor(sbuf(1, 4, "int32", offset=64), sbuf(1, 4, "int32"),
                          sbuf(1, 4, "int32", offset=32), op)
        np.testing.assert_array_equal(run_instruction(tt, {"in0": a, "in1": b})["dst"], expected)


def test_integer_pow_with_negative_exponents_computes_as_float():
    """numpy refuses 2 ** -1 on integers; the engine computes 0.5 and rounds it on write."""
    tt = TensorTensor(sbuf(1, 5, "int32", offset=64), sbuf(1, 5, "int32"),
                      sbuf(1, 5, "int32", offset=32), "pow")
    base = np.array([[2, 1, -1, 3, 0]], np.int32)
    exponent = np.array([[-1, -3, -1, 2, -1]], np.int32)
    out = run_instruction(tt, {"in0": base, "in1": exponent})["dst"]
    with np.errstate(divide="ignore"):
        expected = rounded(base.astype(np.float64) ** exponent, "int32")
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, [[0, 1, -1, 9, 2**31 - 1]])  # 0.5 -> 0; 1/0 saturates


# ---- validation ---------------------------------------------------------------------------
F32, I32 = sbuf(4, 8, "fp32"), sbuf(4, 8, "int32", offset=64)


@pytest.mark.parametrize("args, message", [
    ((F32, F32, F32, "plus"), r"unknown ALU op op='plus'; supported: add, subtract"),
    ((I32, F32, I32, "bitwise_and"),
     r"op=bitwise_and needs integer tiles, got float sbuf\[0:4\]\+0\[\[1,8\]\]:fp32"),
    ((F32, F32, F32, "logical_shift_left"), r"op=logical_shift_left needs integer tiles"),
    ((sbuf(4, 9, "fp32"), F32, F32, "add"),
     r"dst sbuf\[0:4\]\+0\[\[1,9\]\]:fp32 has shape \[4, 9\] but in0 .* has \[4, 8\]"),
    ((F32, F32, sbuf(2, 16, "fp32"), "add"), r"in0 .* has shape \[4, 8\] but in1 .* has "
                                             r"\[2, 16\]"),
])
def test_record_errors(args, message):
    with pytest.raises(InstructionError, match=message):
        TensorTensor(*args)


@pytest.mark.parametrize("tt, stream, message", [
    (TensorTensor(F32, psum(4, 8), F32, "add"), "gpsimd",
     r"gpsimd\[0\] tensor_tensor .*: tensor_tensor operand in0=psum\[0:4\]\+0\[\[1,8\]\]:fp32: "
     r"gpsimd cannot use psum here \(allowed: sbuf\)"),
    (TensorTensor(psum(4, 8), F32, F32, "add"), "gpsimd", r"gpsimd cannot use psum here"),
    (TensorTensor(F32, F32, F32, "add"), "scalar",
     r"tensor_tensor runs on vector/gpsimd, not on scalar"),
    (TensorTensor(sbuf(129, 1, "fp32"), sbuf(129, 1, "fp32", offset=64),
                  sbuf(129, 1, "fp32", offset=128), "add"), "vector",
     r"tensor_tensor operand dst: .*partitions 0\.\.128 exceed the 128 partitions"),
    (TensorTensor(F32, F32, psum(4, 8, offset=16 * 1024 - 16), "add"), "vector",
     r"tensor_tensor operand in1: .*bytes 16368\.\.16399 fall outside the 16384-byte psum"),
])
def test_validation_errors(tt, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(tt, stream)
