"""all_gather: every rank's dst = the ranks' src blocks concatenated in rank-list order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.system import CollectiveError
from isa import InstructionError, ProgramError, psum, sbuf
from isa.instructions import AllGather
from tests.conftest import collective_core, run_cores, validate_alone
from tests.strategies import random_values, seeds


@settings(max_examples=8)
@given(st.lists(st.integers(0, 11), min_size=1, max_size=4, unique=True),
       st.sampled_from(["fp32", "bf16", "int8"]), seeds())
def test_all_gather_concatenates_in_rank_list_order(ranks, dt, seed):
    n = len(ranks)
    programs = [collective_core(f"ag{r}", lambda dst, src: AllGather(dst, src, tuple(ranks)),
                                (4, 6), (4, 6 * n), dt) for r in ranks]
    xs = [random_values(dt, (4, 6), seed + i) for i in range(n)]
    # run the programs on the cores in sorted order: the rank list, not the core order, decides
    order = sorted(range(n), key=lambda i: ranks[i])
    outputs = run_cores([programs[i] for i in order], [{"x": xs[i]} for i in order],
                        [ranks[i] for i in order])
    expected = np.concatenate([x.reshape(-1) for x in xs]).reshape(4, 6 * n)
    for r in ranks:
        np.testing.assert_array_equal(outputs[r]["y"], expected)


def test_record_errors():
    with pytest.raises(InstructionError, match=r"all_gather dst sbuf\[0:4\]\+0\[\[1,8\]\]:fp32 "
                                               r"must hold 2 x 32 elements"):
        AllGather(sbuf(4, 8, "fp32"), sbuf(4, 8, "fp32", offset=64), (0, 1))
    with pytest.raises(InstructionError, match=r"collective ranks \(\) must be distinct"):
        AllGather(sbuf(4, 8, "fp32"), sbuf(4, 8, "fp32", offset=64), ())


@pytest.mark.parametrize("instr, stream, message", [
    (AllGather(sbuf(4, 16, "fp32"), sbuf(4, 8, "fp32", offset=64), (0, 1)), "gpsimd",
     r"all_gather runs on dma, not on gpsimd"),
    (AllGather(sbuf(4, 16, "fp32"), psum(4, 8), (0, 1)), "dma2",
     r"all_gather operand src=psum.*: dma cannot use psum here \(allowed: hbm, sbuf\)"),
])
def test_validation_errors(instr, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(instr, stream)


def test_a_core_outside_the_rank_list_is_rejected():
    programs = [collective_core(f"ag{r}", lambda dst, src: AllGather(dst, src, (0, 1)),
                                (4, 6), (4, 12)) for r in (0, 2)]
    with pytest.raises(CollectiveError, match=r"is not one of the collective's ranks \(0, 1\)"):
        run_cores(programs, [{"x": np.zeros((4, 6))}] * 2, [0, 2])
