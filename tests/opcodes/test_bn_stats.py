"""bn_stats: per partition, (count, mean, M2) of the first ceil(F/2) and of the remaining free
elements, in fp32 (M2 = sum of squared deviations from the half's mean)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isa import BnStats, InstructionError, ProgramError, psum, sbuf
from tests.conftest import run_instruction, validate_alone
from tests.strategies import FLOAT_DTYPES, placed, random_values, seeds


def moments(x: np.ndarray) -> list[np.ndarray]:
    count = np.full(x.shape[0], float(x.shape[1]))
    if x.shape[1] == 0:
        return [count, np.zeros(x.shape[0]), np.zeros(x.shape[0])]
    mean = x.sum(axis=1) / x.shape[1]
    return [count, mean, ((x - mean[:, None]) ** 2).sum(axis=1)]


@st.composite
def stats(draw):
    rows, free = draw(st.integers(1, 32)), draw(st.integers(1, BnStats.fmax))
    src = draw(placed("bn_stats", "src", "vector", 0, draw(st.sampled_from(FLOAT_DTYPES)), rows,
                      free, max_axes=2))
    dst = draw(placed("bn_stats", "dst", "vector", 1, "fp32", rows, 6))
    return BnStats(dst, src)


@given(stats(), seeds())
def test_bn_stats_matches_two_half_moments(bn, seed):
    src = random_values(bn.src.dtype, bn.src.shape, seed, scale=2.0)
    out = run_instruction(bn, {"src": src})["dst"].reshape(bn.src.partitions, 6)
    flat = src.astype(np.float64).reshape(bn.src.partitions, -1)
    half = -(-flat.shape[1] // 2)
    expected = np.stack(moments(flat[:, :half]) + moments(flat[:, half:]), axis=1)
    scale = np.abs(flat).max() + 1.0
    np.testing.assert_array_equal(out[:, [0, 3]], expected[:, [0, 3]])  # counts are exact
    np.testing.assert_allclose(out[:, [1, 4]], expected[:, [1, 4]], rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(out[:, [2, 5]], expected[:, [2, 5]], rtol=1e-4,
                               atol=1e-5 * scale**2)


def test_single_element_leaves_the_second_half_empty():
    out = run_instruction(BnStats(sbuf(2, 6, "fp32", offset=64), sbuf(2, 1, "fp32")),
                          {"src": np.array([[3.0], [-1.0]], np.float32)})["dst"]
    np.testing.assert_array_equal(out, [[1, 3, 0, 0, 0, 0], [1, -1, 0, 0, 0, 0]])


def test_known_values():
    src = np.array([[1, 2, 3, 10, 20]], np.float32)  # halves [1, 2, 3] and [10, 20]
    out = run_instruction(BnStats(psum(1, 6), sbuf(1, 5, "fp32")), {"src": src})["dst"]
    np.testing.assert_allclose(out, [[3, 2, 2, 2, 15, 50]], rtol=1e-7)


# ---- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    ((sbuf(4, 6, "fp32", offset=4096), sbuf(4, 513, "bf16")),
     r"bn_stats free size 513 exceeds bn_stats_fmax=512"),
    ((sbuf(4, 5, "fp32", offset=4096), sbuf(4, 16, "bf16")),
     r"bn_stats dst sbuf\[0:4\]\+4096\[\[1,5\]\]:fp32 must be \[4, 6\]"),
    ((sbuf(2, 6, "fp32", offset=4096), sbuf(4, 16, "bf16")), r"bn_stats dst .* must be \[4, 6\]"),
    ((sbuf(4, 6, "bf16", offset=4096), sbuf(4, 16, "bf16")),
     r"bn_stats dst sbuf\[0:4\]\+4096\[\[1,6\]\]:bf16 must be fp32"),
])
def test_record_errors(args, message):
    with pytest.raises(InstructionError, match=message):
        BnStats(*args)


@pytest.mark.parametrize("stream", ["gpsimd", "scalar"])
def test_bn_stats_runs_on_vector_only(stream):
    with pytest.raises(ProgramError, match=rf"bn_stats runs on vector, not on {stream}"):
        validate_alone(BnStats(sbuf(4, 6, "fp32", offset=4096), sbuf(4, 16, "bf16")), stream)
