"""signal: add one to a semaphore once every earlier instruction of its stream has completed;
each semaphore has a single signalling stream."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isa import (
    INF2,
    DmaCopy,
    InstructionError,
    Memset,
    Program,
    ProgramBuilder,
    ProgramError,
    Signal,
    Stream,
    TensorTensor,
    Wait,
    hbm,
    sbuf,
)
from tests.conftest import execute_functional, validate_alone
from tests.strategies import seeds


@given(st.integers(1, 4), seeds())
def test_signal_follows_the_work_before_it(writes, seed):
    """gpsimd fills `writes` columns then signals once; vector sums them only after the signal."""
    b = ProgramBuilder("fan_in")
    b.tensor("y", (8, 1), "fp32", "output")
    total = sbuf(8, 1, "fp32", offset=256)
    for column in range(writes):
        b.emit("gpsimd", Memset(sbuf(8, 1, "fp32", offset=4 * column), float(column + 1)))
    b.emit("vector", Memset(total, 0.0))
    b.sync("gpsimd", "vector", b.semaphore())
    for column in range(writes):
        b.emit("vector", TensorTensor(total, total, sbuf(8, 1, "fp32", offset=4 * column), "add"))
    b.sync("vector", "dma0", b.semaphore())
    b.emit("dma0", DmaCopy(hbm("y", 8, 1, 1, "fp32"), total))
    program = b.build()
    result = execute_functional(program, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(result.outputs["y"], np.full((8, 1), writes * (writes + 1) / 2))
    order = result.order
    signal = order.index(("gpsimd", writes))
    assert all(order.index(("gpsimd", i)) < signal for i in range(writes))


def test_signal_counts_accumulate():
    b = ProgramBuilder("counts")
    sem = b.semaphore()
    assert [b.signal("sync", sem) for _ in range(3)] == [1, 2, 3]
    b.emit("vector", Wait(sem, 3))
    program = b.build()
    program.validate(INF2)
    assert execute_functional(program).order[-1] == ("vector", 0)


@pytest.mark.parametrize("stream", INF2.stream_names)
def test_signal_runs_on_every_stream(stream):
    validate_alone(Signal(31), stream)


def test_negative_semaphore_index_is_rejected():
    with pytest.raises(InstructionError, match=r"semaphore index -1 must be >= 0"):
        Signal(-1)


def test_semaphore_beyond_the_target_is_rejected():
    with pytest.raises(ProgramError, match=r"dma3\[0\] signal sem=40: semaphore 40 exceeds the "
                                           r"32 semaphores of inf2"):
        validate_alone(Signal(40), "dma3")


def test_semaphore_signalled_from_two_streams_is_rejected():
    program = Program("p", (), (Stream("dma0", (Signal(7),)), Stream("vector", (Signal(6),)),
                                Stream("scalar", (Signal(7),))))
    with pytest.raises(ProgramError, match=r"scalar\[0\] signal sem=7: semaphore 7 is already "
                                           r"signalled by stream dma0; each semaphore has one "
                                           r"signalling stream"):
        program.validate(INF2)
    with pytest.raises(ProgramError, match=r"already signalled by stream dma0"):
        execute_functional(program)
