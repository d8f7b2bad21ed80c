"""matmul: dst[M, N] (+)= stationary[K, M].T @ moving[K, N] on the Tensor engine, fp32 in PSUM.

Reference: float64 product of the operands as stored (already rounded to their dtype).  fp32
accumulation of K products errs by at most about K * 2^-24 * sum|a||b| per element, which is
the tolerance used (plus one fp32 ulp of the result).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.memory import UninitializedReadError
from isa import (
    INF2,
    DmaCopy,
    InstructionError,
    MatMul,
    ProgramBuilder,
    ProgramError,
    Space,
    hbm,
    psum,
    sbuf,
)
from tests.conftest import execute_functional, run_instruction, validate_alone
from tests.strategies import (
    FLOAT_DTYPES,
    access_patterns,
    psum_bank,
    random_values,
    sbuf_slot,
    seeds,
)

WIDE = dataclasses.replace(INF2, name="wide", partitions=256)  # lets K and M exceed 128


def assert_product(actual: np.ndarray, stationary: np.ndarray, moving: np.ndarray,
                   initial: np.ndarray | None = None) -> None:
    a = stationary.astype(np.float64).reshape(stationary.shape[0], -1)
    b = moving.astype(np.float64).reshape(moving.shape[0], -1)
    expected = a.T @ b
    bound = np.abs(a).T @ np.abs(b)
    if initial is not None:
        expected = expected + initial.astype(np.float64).reshape(expected.shape)
        bound = bound + np.abs(initial.astype(np.float64)).reshape(expected.shape)
    k = a.shape[0]
    error = np.abs(actual.reshape(expected.shape).astype(np.float64) - expected)
    assert np.all(error <= (k + 2) * 2.0**-24 * bound + 1e-30), error.max()


@st.composite
def matmuls(draw, accumulate: bool):
    k, m = draw(st.integers(1, 128)), draw(st.integers(1, 128))
    n = draw(st.integers(1, 512))
    stationary = draw(access_patterns(Space.SBUF, draw(st.sampled_from(FLOAT_DTYPES)), k, m,
                                      region=sbuf_slot(0)))
    moving = draw(access_patterns(Space.SBUF, draw(st.sampled_from(FLOAT_DTYPES)), k, n,
                                  region=sbuf_slot(1)))
    dst = draw(access_patterns(Space.PSUM, "fp32", m, n, region=psum_bank(draw(st.integers(0, 7))),
                               strided=False if n > 128 else None))
    return MatMul(dst, stationary, moving, accumulate)


@given(matmuls(False), seeds())
def test_matmul_matches_numpy_for_every_float_dtype_and_layout(mm, seed):
    stationary = random_values(mm.stationary.dtype, mm.stationary.shape, seed, scale=1.0)
    moving = random_values(mm.moving.dtype, mm.moving.shape, seed + 1, scale=1.0)
    out = run_instruction(mm, {"stationary": stationary, "moving": moving})["dst"]
    assert out.dtype == np.float32
    assert_product(out, stationary, moving)


@given(matmuls(True), seeds())
def test_accumulating_matmul_adds_to_psum(mm, seed):
    stationary = random_values(mm.stationary.dtype, mm.stationary.shape, seed, scale=1.0)
    moving = random_values(mm.moving.dtype, mm.moving.shape, seed + 1, scale=1.0)
    initial = random_values("fp32", mm.dst.shape, seed + 2)
    out = run_instruction(mm, {"stationary": stationary, "moving": moving, "dst": initial})["dst"]
    assert_product(out, stationary, moving, initial)


def test_full_size_bf16_tile():
    mm = MatMul(psum(128, 512, offset=3 * 2048), sbuf(128, 128, "bf16"),
                sbuf(128, 512, "bf16", offset=1024))
    stationary = random_values("bf16", (128, 128), 1)
    moving = random_values("bf16", (128, 512), 2)
    out = run_instruction(mm, {"stationary": stationary, "moving": moving})["dst"]
    expected = stationary.astype(np.float64).T @ moving.astype(np.float64)
    np.testing.assert_allclose(out, expected, rtol=1e-2, atol=1e-2 * np.abs(expected).max())
    assert_product(out, stationary, moving)


def test_accumulate_into_never_written_psum_raises():
    b = ProgramBuilder("uninitialised_accumulate")
    b.tensor("a", (2, 12), "bf16", "input")
    b.emit("dma0", DmaCopy(sbuf(2, 12, "bf16"), hbm("a", 2, 12, 12, "bf16")))
    b.sync("dma0", "tensor", b.semaphore())
    b.emit("tensor", MatMul(psum(4, 8), sbuf(2, 4, "bf16"), sbuf(2, 8, "bf16", offset=8), True))
    with pytest.raises(UninitializedReadError, match=r"tensor\[1\] matmul .*: read of "
                                                     r"psum\[0:4\]\+0\[\[1,8\]\]:fp32"):
        execute_functional(b.build(), {"a": np.ones((2, 12))})


# ---- validation ---------------------------------------------------------------------------
def test_record_errors():
    with pytest.raises(InstructionError, match=r"matmul contraction mismatch: stationary "
                                               r"sbuf\[0:4\]\+0\[\[1,8\]\]:bf16 has K=4 "
                                               r"partitions but moving .* has 8"):
        MatMul(psum(8, 16), sbuf(4, 8, "bf16"), sbuf(8, 16, "bf16", offset=64))
    with pytest.raises(InstructionError, match=r"matmul dst psum\[0:8\]\+0\[\[1,8\]\]:fp32 must "
                                               r"be \[M=8, N=16\], got \[8, 8\]"):
        MatMul(psum(8, 8), sbuf(4, 8, "bf16"), sbuf(4, 16, "bf16", offset=64))
    with pytest.raises(InstructionError, match=r"matmul dst psum\[0:8\]\+0\[\[1,16\]\]:bf16 must "
                                               r"be fp32 \(PSUM accumulates in fp32\), got bf16"):
        MatMul(psum(8, 16, "bf16"), sbuf(4, 8, "bf16"), sbuf(4, 16, "bf16", offset=64))
    with pytest.raises(InstructionError, match=r"matmul operands must be float, got int8 and "
                                               r"bf16"):
        MatMul(psum(8, 16), sbuf(4, 8, "int8"), sbuf(4, 16, "bf16", offset=64))


@pytest.mark.parametrize("mm, message", [
    (MatMul(psum(8, 16), sbuf(129, 8, "bf16"), sbuf(129, 16, "bf16", offset=64)),
     r"matmul K=129 exceeds the limit 128"),
    (MatMul(psum(129, 16), sbuf(4, 129, "bf16"), sbuf(4, 16, "bf16", offset=512)),
     r"matmul stationary free size M=129 exceeds the limit 128"),
    (MatMul(psum(8, 513), sbuf(4, 8, "bf16"), sbuf(4, 513, "bf16", offset=64)),
     r"matmul moving free size N=513 exceeds the limit 512"),
])
def test_matmul_tile_limits(mm, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(mm, target=WIDE)


@pytest.mark.parametrize("mm, message", [
    (MatMul(psum(8, 512, offset=1024), sbuf(4, 8, "bf16"), sbuf(4, 512, "bf16", offset=64)),
     r"matmul dst psum\[0:8\]\+1024\[\[1,512\]\]:fp32 spans PSUM bytes 1024\.\.3071, crossing "
     r"a 2048-byte bank boundary"),
    (MatMul(psum(8, 2, offset=2044), sbuf(4, 8, "bf16"), sbuf(4, 2, "bf16", offset=64)),
     r"spans PSUM bytes 2044\.\.2051, crossing a 2048-byte bank boundary"),
    (MatMul(psum(8, 16), psum(4, 8, "bf16", offset=4096), sbuf(4, 16, "bf16")),
     r"matmul operand stationary=psum\[0:4\]\+4096\[\[1,8\]\]:bf16: tensor cannot use psum "
     r"here \(allowed: sbuf\)"),
    (MatMul(psum(8, 16), sbuf(4, 8, "bf16"), psum(4, 16, "bf16", offset=4096)),
     r"matmul operand moving=.*: tensor cannot use psum here \(allowed: sbuf\)"),
    (MatMul(sbuf(8, 16, "fp32"), sbuf(4, 8, "bf16"), sbuf(4, 16, "bf16", offset=64)),
     r"matmul operand dst=sbuf.*: tensor cannot use sbuf here \(allowed: psum\)"),
    (MatMul(psum(8, 16), sbuf(129, 8, "bf16"), sbuf(129, 16, "bf16", offset=64)),
     r"matmul operand stationary: .*partitions 0\.\.128 exceed the 128 partitions"),
    (MatMul(psum(8, 16, offset=16 * 1024 - 32), sbuf(4, 8, "bf16"),
            sbuf(4, 16, "bf16", offset=64)),
     r"matmul operand dst: .*bytes 16352\.\.16415 fall outside the 16384-byte psum partition"),
    (MatMul(psum(8, 16), sbuf((32, 48), 8, "bf16"), sbuf((0, 48), 16, "bf16", offset=64)),
     r"matmul operand stationary: an operand of 48 partitions may start at partition "
     r"\(0, 64\), not 32"),
])
def test_matmul_validation_errors(mm, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(mm)


@pytest.mark.parametrize("stream", ["vector", "scalar", "gpsimd", "dma0"])
def test_matmul_runs_on_the_tensor_engine_only(stream):
    mm = MatMul(psum(8, 16), sbuf(4, 8, "bf16"), sbuf(4, 16, "bf16", offset=64))
    with pytest.raises(ProgramError, match=rf"matmul runs on tensor, not on {stream[:3]}"):
        validate_alone(mm, stream)
