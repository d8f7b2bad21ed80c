"""bn_aggr: combine per-partition (count, mean, M2) triples into (mean, population variance),
and with bn_stats, the two-instruction mean/variance of layer and batch norm."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isa import (
    BnAggr,
    BnStats,
    DmaCopy,
    InstructionError,
    ProgramBuilder,
    ProgramError,
    hbm,
    sbuf,
)
from tests.conftest import execute_functional, rounded, run_instruction, validate_alone
from tests.strategies import FLOAT_DTYPES, placed, random_values, seeds


@st.composite
def aggregations(draw):
    rows, groups = draw(st.integers(1, 16)), draw(st.integers(1, 6))
    src = draw(placed("bn_aggr", "src", "vector", 0, "fp32", rows, 3 * groups))
    dst = draw(placed("bn_aggr", "dst", "vector", 1, draw(st.sampled_from(FLOAT_DTYPES[:4])),
                      rows, 2))
    return BnAggr(dst, src), draw(st.lists(st.integers(0, 20), min_size=groups,
                                           max_size=groups).filter(any))


@given(aggregations(), seeds())
def test_bn_aggr_equals_the_moments_of_the_union(case, seed):
    agg, sizes = case
    rng = np.random.default_rng(seed)
    rows = agg.src.partitions
    data = [rng.normal(rng.uniform(-3, 3), rng.uniform(0.1, 2), (rows, n)) for n in sizes]
    triples = []
    for group in data:
        n = group.shape[1]
        mean = group.mean(axis=1) if n else np.zeros(rows)
        m2 = ((group - mean[:, None]) ** 2).sum(axis=1)
        triples.append(np.stack([np.full(rows, n), mean, m2], axis=1))
    src = np.concatenate(triples, axis=1).astype(np.float32)
    out = run_instruction(agg, {"src": src.reshape(agg.src.shape)})["dst"].reshape(rows, 2)
    # the reference sees the fp32-rounded triples, as the engine does
    counts, means, m2s = (src[:, i::3].astype(np.float64) for i in range(3))
    union = np.concatenate(data, axis=1)
    assert np.allclose(union.mean(axis=1), (counts * means).sum(1) / counts.sum(1), atol=1e-5)
    mean = (counts * means).sum(1) / counts.sum(1)
    var = (m2s.sum(1) + (counts * (means - mean[:, None]) ** 2).sum(1)) / counts.sum(1)
    expected = rounded(np.stack([mean, var], axis=1), agg.dst.dtype)
    rtol = {"fp32": 1e-5, "tf32": 2e-3, "bf16": 1e-2, "fp16": 2e-3}[agg.dst.dtype.name]
    np.testing.assert_allclose(out.astype(np.float64), expected.astype(np.float64), rtol=rtol,
                               atol=1e-5)
    np.testing.assert_allclose(var, union.var(axis=1), rtol=1e-4, atol=1e-5)


def test_all_empty_groups_give_zero():
    out = run_instruction(BnAggr(sbuf(1, 2, "fp32", offset=64), sbuf(1, 6, "fp32")),
                          {"src": np.zeros((1, 6), np.float32)})["dst"]
    np.testing.assert_array_equal(out, [[0, 0]])


@given(st.integers(1, 4), st.integers(2, 512), st.sampled_from(FLOAT_DTYPES[:4]), seeds())
def test_bn_stats_then_bn_aggr_give_mean_and_variance(chunks, width, dt, seed):
    """Layer norm statistics of `chunks` bn_stats calls of `width` elements each."""
    rows = 16
    x = random_values(dt, (rows, chunks * width), seed, scale=3.0)
    b = ProgramBuilder("layernorm_stats")
    b.tensor("x", (rows, chunks * width), dt, "input")
    b.tensor("stats", (rows, 2), "fp32", "output")
    b.emit("dma0", DmaCopy(sbuf(rows, chunks * width, dt), hbm("x", rows, chunks * width,
                                                              chunks * width, dt)))
    b.sync("dma0", "vector", b.semaphore())
    stats_base = 160 * 1024
    for chunk in range(chunks):
        src = sbuf(rows, width, dt, offset=chunk * width * dt.itemsize)
        b.emit("vector", BnStats(sbuf(rows, 6, "fp32", offset=stats_base + 24 * chunk), src))
    b.emit("vector", BnAggr(sbuf(rows, 2, "fp32", offset=stats_base - 64),
                            sbuf(rows, 6 * chunks, "fp32", offset=stats_base)))
    b.sync("vector", "dma1", b.semaphore())
    b.emit("dma1", DmaCopy(hbm("stats", rows, 2, 2, "fp32"),
                           sbuf(rows, 2, "fp32", offset=stats_base - 64)))
    out = execute_functional(b.build(), {"x": x}).outputs["stats"]
    wide = x.astype(np.float64)
    np.testing.assert_allclose(out[:, 0], wide.mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[:, 1], wide.var(axis=1), rtol=1e-4, atol=1e-5)


# ---- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    ((sbuf(4, 2, "fp32", offset=64), sbuf(4, 7, "fp32")),
     r"bn_aggr src sbuf\[0:4\]\+0\[\[1,7\]\]:fp32 free size 7 is not a multiple of 3"),
    ((sbuf(4, 3, "fp32", offset=64), sbuf(4, 6, "fp32")),
     r"bn_aggr dst sbuf\[0:4\]\+64\[\[1,3\]\]:fp32 must be \[4, 2\]"),
    ((sbuf(8, 2, "fp32", offset=64), sbuf(4, 6, "fp32")), r"bn_aggr dst .* must be \[4, 2\]"),
])
def test_record_errors(args, message):
    with pytest.raises(InstructionError, match=message):
        BnAggr(*args)


@pytest.mark.parametrize("stream", ["gpsimd", "scalar", "tensor"])
def test_bn_aggr_runs_on_vector_only(stream):
    with pytest.raises(ProgramError, match=rf"bn_aggr runs on vector, not on {stream}"):
        validate_alone(BnAggr(sbuf(4, 2, "fp32", offset=64), sbuf(4, 6, "fp32")), stream)
