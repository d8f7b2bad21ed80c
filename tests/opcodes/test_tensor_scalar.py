"""tensor_scalar: dst = (src <op0> operand0) <op1> operand1, each operand an immediate or a
per-partition [P, 1] tile, either side of the op (`reverse`), on Vector, Scalar or GpSimd."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isa import InstructionError, ProgramError, TensorScalar, psum, sbuf
from isa.instructions import BITWISE_OPS
from tests.conftest import TOLERANCE, assert_matches, rounded, run_instruction, validate_alone
from tests.strategies import FLOAT_DTYPES, INT_DTYPES, placed, random_values, seeds

ARITHMETIC = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "max": np.maximum,
    "min": np.minimum,
    "abs_max": lambda a, b: np.maximum(np.abs(a), np.abs(b)),
    "bypass": lambda a, b: a + 0 * b,
    "is_ge": lambda a, b: (a >= b) * 1,
    "is_lt": lambda a, b: (a < b) * 1,
    "not_equal": lambda a, b: (a != b) * 1,
}
BITWISE = {
    "bitwise_and": lambda a, b: a & b,
    "bitwise_or": lambda a, b: a | b,
    "bitwise_xor": lambda a, b: a ^ b,
    "logical_shift_left": lambda a, b: a << b,
    "logical_shift_right": lambda a, b: a >> b,
}


@st.composite
def scalar_operand(draw, op: str, slot: int, rows: int, engine: str, integer: bool):
    """An immediate or a [P, 1] tile; bit operations take integers (shift counts 0..3)."""
    if draw(st.booleans()):
        dt = draw(st.sampled_from(INT_DTYPES if integer else FLOAT_DTYPES))
        return draw(placed("tensor_scalar", f"operand{slot - 2}", engine, slot, dt, rows, 1))
    if op in BITWISE_OPS:
        return float(draw(st.integers(0, 3 if "shift" in op else 255)))
    if integer:
        return float(draw(st.integers(-5, 5)))
    return draw(st.floats(-4, 4, width=32))


@st.composite
def tensor_scalars(draw, ops: dict):
    engine = draw(st.sampled_from(["vector", "scalar", "gpsimd"]))
    rows, free = draw(st.integers(1, 32)), draw(st.integers(1, 64))
    op0 = draw(st.sampled_from(sorted(ops)))
    op1 = draw(st.one_of(st.none(), st.sampled_from(sorted(ops))))
    integer = ops is BITWISE or draw(st.booleans())
    dtypes = INT_DTYPES if integer else FLOAT_DTYPES
    src = draw(placed("tensor_scalar", "src", engine, 0, draw(st.sampled_from(dtypes)), rows,
                      free))
    dst = draw(placed("tensor_scalar", "dst", engine, 1, draw(st.sampled_from(dtypes)), rows,
                      free))
    operand0 = draw(scalar_operand(op0, 2, rows, engine, integer))
    operand1 = None if op1 is None else draw(scalar_operand(op1, 3, rows, engine, integer))
    return engine, TensorScalar(dst, src, op0, operand0, op1, operand1, draw(st.booleans()),
                                draw(st.booleans()))


def check(engine: str, ts: TensorScalar, ops: dict, seed: int) -> None:
    integer = not ts.src.dtype.is_float
    wide = np.int64 if integer else np.float64
    shifts = ts.op0 in BITWISE_OPS and "shift" in ts.op0 or ts.op1 is not None and "shift" in ts.op1
    src = random_values(ts.src.dtype, ts.src.shape, seed, low=0 if ops is BITWISE else -20,
                        high=15 if ops is BITWISE else 20)
    inputs, operands = {"src": src}, []
    for index, op in ((0, ts.op0), (1, ts.op1)):
        value = getattr(ts, f"operand{index}")
        if op is None:
            continue
        if isinstance(value, float):
            operands.append(wide(value))
            continue
        high = 3 if "shift" in op else 15
        tile = random_values(value.dtype, value.shape, seed + 1 + index,
                             low=0 if shifts or ops is BITWISE else None,
                             high=high if ops is BITWISE else None)
        inputs[f"operand{index}"] = tile
        operands.append(tile.astype(wide).reshape(-1, 1))
    out = run_instruction(ts, inputs, engine)["dst"]
    expected = src.astype(wide).reshape(ts.src.partitions, -1)
    magnitude = np.abs(expected)
    steps = [(ts.op0, ts.reverse0)] + ([(ts.op1, ts.reverse1)] if ts.op1 is not None else [])
    for (op, reverse), operand in zip(steps, operands):
        expected = ops[op](operand, expected) if reverse else ops[op](expected, operand)
        magnitude = np.maximum(magnitude, np.abs(expected))
    expected = rounded(expected, ts.dst.dtype)
    if integer:
        assert_matches(out.reshape(expected.shape), expected, ts.dst.dtype)
        return
    # Each fp32 step rounds by half an fp32 ulp of its result, which a later subtraction does
    # not shrink: allow 2^-23 of the largest intermediate, plus the destination's tolerance.
    rtol, atol = TOLERANCE[ts.dst.dtype.name]
    actual = out.reshape(expected.shape).astype(np.float64)
    error = np.abs(actual - expected.astype(np.float64))
    assert np.all(error <= rtol * np.abs(expected.astype(np.float64)) + 2.0**-23 * magnitude
                  + atol), error.max()


@settings(max_examples=60)
@given(data=st.data(), seed=seeds())
def test_arithmetic_matches_numpy(data, seed):
    engine, ts = data.draw(tensor_scalars(ARITHMETIC))
    check(engine, ts, ARITHMETIC, seed)


@settings(max_examples=40)
@given(data=st.data(), seed=seeds())
def test_bit_operations_with_immediates_and_tiles(data, seed):
    engine, ts = data.draw(tensor_scalars(BITWISE))
    check(engine, ts, BITWISE, seed)


def test_immediate_masks_keep_all_32_bits():
    """An fp32 immediate would round 0x7FFFFF0F; bitwise ops take the exact integer."""
    ts = TensorScalar(sbuf(2, 4, "int32", offset=64), sbuf(2, 4, "int32"), "bitwise_and",
                      float(0x7FFFFF0F), "bitwise_or", 1.0)
    src = np.array([[-1, 0x12345678, 255, 0], [7, 0x7FFFFFFF, -256, 16]], np.int32)
    out = run_instruction(ts, {"src": src})["dst"]
    np.testing.assert_array_equal(out, (src & 0x7FFFFF0F) | 1)


def test_a_bitwise_second_op_rounds_a_fractional_intermediate_half_to_even():
    # int32 src + 1.5 is fractional; the bitwise op takes it as an integer: rint, then & 5.
    ts = TensorScalar(sbuf(1, 4, "int32", offset=64), sbuf(1, 4, "int32"), "add", 1.5,
                      "bitwise_and", 5.0)
    src = np.array([[3, 2, -4, 0]], np.int32)  # + 1.5 -> 4.5, 3.5, -2.5, 1.5
    out = run_instruction(ts, {"src": src})["dst"]
    np.testing.assert_array_equal(out, np.array([[4 & 5, 4 & 5, -2 & 5, 2 & 5]]))


def test_divide_and_pow_with_reversed_operands():
    ts = TensorScalar(sbuf(2, 3, "fp32", offset=64), sbuf(2, 3, "fp32"), "divide", 6.0,
                      "pow", 2.0, reverse0=True, reverse1=True)
    src = np.array([[1, 2, 3], [-1, 0.5, 4]], np.float32)
    out = run_instruction(ts, {"src": src}, "scalar")["dst"]
    np.testing.assert_allclose(out, 2.0 ** (6.0 / src.astype(np.float64)), rtol=1e-6)


# ---- validation ---------------------------------------------------------------------------
F32, I32 = sbuf(4, 8, "fp32"), sbuf(4, 8, "int32", offset=64)


@pytest.mark.parametrize("kwargs, message", [
    (dict(op0="plus"), r"unknown ALU op op0='plus'; supported: add"),
    (dict(op1="plus", operand1=1.0), r"unknown ALU op op1='plus'"),
    (dict(op0="bitwise_or"), r"op0=bitwise_or needs integer tiles, got float "
                             r"sbuf\[0:4\]\+0\[\[1,8\]\]:fp32"),
    (dict(dst=I32, src=I32, op0="bitwise_and", operand0=2.5),
     r"op0=bitwise_and needs an integer operand0, got 2\.5"),
    (dict(dst=I32, src=I32, op0="logical_shift_left", operand0=sbuf(4, 1, "fp32", offset=128)),
     r"op0=logical_shift_left needs integer tiles, got float sbuf\[0:4\]\+128\[\[1,1\]\]:fp32"),
    (dict(op1="add"), r"op1='add' and operand1=None must be given together"),
    (dict(operand1=3.0), r"op1=None and operand1=3\.0 must be given together"),
    (dict(operand0=sbuf(4, 2, "fp32", offset=128)),
     r"operand0 sbuf\[0:4\]\+128\[\[1,2\]\]:fp32 must be a per-partition \[4, 1\] tile"),
    (dict(op1="add", operand1=sbuf(2, 1, "fp32", offset=128)),
     r"operand1 .* must be a per-partition \[4, 1\] tile"),
    (dict(dst=sbuf(4, 4, "fp32")), r"dst .* has shape \[4, 4\] but src .* has \[4, 8\]"),
])
def test_record_errors(kwargs, message):
    fields = dict(dst=F32, src=F32, op0="multiply", operand0=2.0)
    fields.update(kwargs)
    with pytest.raises(InstructionError, match=message):
        TensorScalar(**fields)


@pytest.mark.parametrize("ts, stream, message", [
    (TensorScalar(F32, F32, "add", 1.0), "tensor",
     r"tensor_scalar runs on vector/scalar/gpsimd, not on tensor"),
    (TensorScalar(F32, psum(4, 8), "add", 1.0), "gpsimd",
     r"tensor_scalar operand src=psum.*: gpsimd cannot use psum here \(allowed: sbuf\)"),
    (TensorScalar(F32, F32, "add", psum(4, 1)), "gpsimd",
     r"tensor_scalar operand operand0=psum\[0:4\]\+0\[\[1,1\]\]:fp32: gpsimd cannot use psum"),
    (TensorScalar(sbuf((64, 4), 8, "fp32"), sbuf((16, 4), 8, "fp32"), "add", 1.0), "vector",
     r"tensor_scalar operand src: an operand of 4 partitions may start at partition "
     r"\(0, 32, 64, 96\), not 16"),
])
def test_validation_errors(ts, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(ts, stream)
