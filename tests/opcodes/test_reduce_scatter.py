"""reduce_scatter: rank i's dst = block i of the reduction over the ranks of their src."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isa import InstructionError, ProgramError, psum, sbuf
from isa.instructions import REDUCE_OPS, ReduceScatter
from tests.conftest import collective_core, rounded, run_cores, validate_alone
from tests.strategies import random_values, seeds

REFERENCE = {"add": np.sum, "max": np.max, "min": np.min}


@settings(max_examples=8)
@given(st.lists(st.integers(0, 11), min_size=1, max_size=4, unique=True),
       st.sampled_from(REDUCE_OPS), st.sampled_from(["fp32", "int16"]), seeds())
def test_reduce_scatter_gives_rank_i_block_i(ranks, op, dt, seed):
    n = len(ranks)
    programs = [collective_core(f"rs{r}",
                                lambda dst, src: ReduceScatter(dst, src, tuple(ranks), op),
                                (4, 5 * n), (4, 5), dt) for r in ranks]
    xs = [random_values(dt, (4, 5 * n), seed + i) for i in range(n)]
    outputs = run_cores(programs, [{"x": x} for x in xs], ranks)
    wide = np.float64 if dt == "fp32" else np.int64
    stacked = np.stack([x.astype(wide).reshape(-1) for x in xs])
    total = REFERENCE[op](stacked, axis=0)
    # an fp32 sum of n terms errs by up to n * 2^-24 * sum |x|; max/min and integers are exact
    bounds = n * 2.0**-24 * np.abs(stacked).sum(axis=0) if op == "add" else np.zeros(total.size)
    for i, r in enumerate(ranks):
        block = rounded(np.split(total, n)[i].reshape(4, 5), dt).astype(np.float64)
        error = np.abs(outputs[r]["y"].astype(np.float64) - block)
        assert np.all(error <= np.split(bounds, n)[i].reshape(4, 5)), error.max()


def test_record_errors():
    with pytest.raises(InstructionError, match=r"reduce_scatter src sbuf\[0:4\]\+64\[\[1,8\]\]:"
                                               r"fp32 must hold 3 x 8 elements"):
        ReduceScatter(sbuf(4, 2, "fp32"), sbuf(4, 8, "fp32", offset=64), (0, 1, 2))
    with pytest.raises(InstructionError, match=r"unknown reduce op 'prod'"):
        ReduceScatter(sbuf(4, 4, "fp32"), sbuf(4, 8, "fp32", offset=64), (0, 1), "prod")


@pytest.mark.parametrize("instr, stream, message", [
    (ReduceScatter(sbuf(4, 4, "fp32"), sbuf(4, 8, "fp32", offset=64), (0, 1)), "scalar",
     r"reduce_scatter runs on dma, not on scalar"),
    (ReduceScatter(psum(4, 4), sbuf(4, 8, "fp32", offset=64), (0, 1)), "dma1",
     r"reduce_scatter operand dst=psum.*: dma cannot use psum here"),
])
def test_validation_errors(instr, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(instr, stream)
