"""all_reduce: every rank's dst = the reduction (add/max/min) over the ranks of their src, a
collective on DMA queues across NeuronCores (run with emulator.system.run_system)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isa import INF2, InstructionError, ProgramError, psum, sbuf
from isa.instructions import REDUCE_OPS, AllReduce
from tests.conftest import collective_core, rounded, run_cores, validate_alone
from tests.strategies import random_values, seeds

REFERENCE = {"add": np.sum, "max": np.max, "min": np.min}


@settings(max_examples=8)
@given(st.lists(st.integers(0, 11), min_size=1, max_size=4, unique=True),
       st.sampled_from(REDUCE_OPS), st.sampled_from(["fp32", "bf16", "int32"]), seeds())
def test_all_reduce_gives_every_rank_the_reduction(ranks, op, dt, seed):
    shape = (8, 24)
    programs = [collective_core(f"ar{r}", lambda dst, src: AllReduce(dst, src, tuple(ranks), op),
                                shape, shape, dt) for r in ranks]
    xs = [random_values(dt, shape, seed + i) for i in range(len(ranks))]
    outputs = run_cores(programs, [{"x": x} for x in xs], ranks)
    wide = np.float64 if dt != "int32" else np.int64
    stacked = np.stack([x.astype(wide) for x in xs])
    expected = rounded(REFERENCE[op](stacked, axis=0), dt).astype(np.float64)
    # an fp32 sum of n terms errs by up to n * 2^-24 * sum |x| (cancellation included);
    # bf16 results by half a bf16 ulp more; max/min and integers are exact
    bound = len(ranks) * 2.0**-24 * np.abs(stacked).sum(axis=0) if op == "add" else 0.0
    bound = bound + (2.0**-8 * np.abs(expected) if dt == "bf16" else 0.0)
    for r in ranks:
        error = np.abs(outputs[r]["y"].astype(np.float64) - expected)
        assert np.all(error <= bound), error.max()


def test_record_errors():
    with pytest.raises(InstructionError, match=r"collective ranks \(0, 0\) must be distinct core "
                                               r"indices >= 0"):
        AllReduce(sbuf(4, 8, "fp32"), sbuf(4, 8, "fp32", offset=64), (0, 0))
    with pytest.raises(InstructionError, match=r"collective ranks \(-1, 2\) must be distinct"):
        AllReduce(sbuf(4, 8, "fp32"), sbuf(4, 8, "fp32", offset=64), (-1, 2))
    with pytest.raises(InstructionError, match=r"unknown reduce op 'mean'; supported: add, max, "
                                               r"min"):
        AllReduce(sbuf(4, 8, "fp32"), sbuf(4, 8, "fp32", offset=64), (0, 1), "mean")
    with pytest.raises(InstructionError, match=r"all_reduce dst sbuf\[0:4\]\+0\[\[1,4\]\]:fp32 "
                                               r"must hold src's 32 elements"):
        AllReduce(sbuf(4, 4, "fp32"), sbuf(4, 8, "fp32", offset=64), (0, 1))


@pytest.mark.parametrize("instr, stream, message", [
    (AllReduce(sbuf(4, 8, "fp32"), sbuf(4, 8, "fp32", offset=64), (0, 1)), "vector",
     r"all_reduce runs on dma, not on vector"),
    (AllReduce(psum(4, 8), sbuf(4, 8, "fp32", offset=64), (0, 1)), "dma0",
     r"all_reduce operand dst=psum\[0:4\]\+0\[\[1,8\]\]:fp32: dma cannot use psum here"),
])
def test_validation_errors(instr, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(instr, stream, INF2)


def test_a_single_core_cannot_run_a_collective():
    from tests.conftest import execute_functional
    program = collective_core("alone", lambda dst, src: AllReduce(dst, src, (0, 1)), (4, 8),
                              (4, 8))
    with pytest.raises(ValueError, match=r"all_reduce involves several cores: run the programs "
                                         r"together with emulator.system.run_system"):
        execute_functional(program, {"x": np.zeros((4, 8))})
