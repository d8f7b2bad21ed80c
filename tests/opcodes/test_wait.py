"""wait: block a stream until a semaphore has been signalled at least `value` times."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.functional import DeadlockError
from isa import (
    INF2,
    DmaCopy,
    InstructionError,
    Program,
    ProgramBuilder,
    ProgramError,
    Signal,
    Stream,
    TensorScalar,
    Wait,
    hbm,
    sbuf,
)
from tests.conftest import execute_functional, validate_alone
from tests.strategies import seeds

STAGES = ("vector", "scalar", "gpsimd")


def pipeline(stages: int) -> Program:
    """x -> SBUF, then `stages` engines in turn add 1.0 in place, then SBUF -> y."""
    b = ProgramBuilder("add_pipeline")
    b.tensor("x", (32, 16), "fp32", "input")
    b.tensor("y", (32, 16), "fp32", "output")
    tile = sbuf(32, 16, "fp32")
    b.emit("dma0", DmaCopy(tile, hbm("x", 32, 16, 16, "fp32")))
    previous = "dma0"
    for stage in STAGES[:stages]:
        b.sync(previous, stage, b.semaphore())
        b.emit(stage, TensorScalar(tile, tile, "add", 1.0))
        previous = stage
    b.sync(previous, "dma1", b.semaphore())
    b.emit("dma1", DmaCopy(hbm("y", 32, 16, 16, "fp32"), tile))
    return b.build()


def waits_respected(program: Program, order: list[tuple[str, int]]) -> bool:
    """Every wait ran only after its semaphore had been signalled `value` times."""
    counts: dict[int, int] = {}
    for stream, index in order:
        instr = program.stream(stream).instructions[index]
        if isinstance(instr, Wait) and counts.get(instr.sem, 0) < instr.value:
            return False
        if isinstance(instr, Signal):
            counts[instr.sem] = counts.get(instr.sem, 0) + 1
    return True


@given(st.integers(1, len(STAGES)), seeds())
def test_waits_order_every_interleaving(stages, seed):
    program = pipeline(stages)
    x = np.random.default_rng(seed).standard_normal((32, 16)).astype(np.float32)
    result = execute_functional(program, {"x": x}, rng=np.random.default_rng(seed))
    expected = x
    for _ in range(stages):  # one fp32 rounding per stage, exactly as numpy does it
        expected = expected + np.float32(1.0)
    np.testing.assert_array_equal(result.outputs["y"], expected)
    assert waits_respected(program, result.order)
    assert sorted(result.order) == sorted(
        (s.name, i) for s in program.streams for i in range(len(s.instructions)))


@given(seeds())
def test_wait_for_a_count_sees_every_counted_signal(seed):
    """A producer signals after each of three column writes; the consumer waits for all three."""
    b = ProgramBuilder("count")
    b.tensor("x", (4, 12), "fp32", "input")
    b.tensor("y", (4, 12), "fp32", "output")
    tile = sbuf(4, 12, "fp32")
    sem = b.semaphore()
    for part in range(3):
        b.emit("dma0", DmaCopy(sbuf(4, 4, "fp32", offset=16 * part),
                               hbm("x", 4, 12, 4, "fp32", offset=16 * part)))
        b.signal("dma0", sem)
    b.emit("vector", Wait(sem, 3))
    b.emit("vector", TensorScalar(tile, tile, "multiply", -1.0))
    b.sync("vector", "dma1", b.semaphore())
    b.emit("dma1", DmaCopy(hbm("y", 4, 12, 12, "fp32"), tile))
    x = np.arange(48, dtype=np.float32).reshape(4, 12)
    result = execute_functional(b.build(), {"x": x}, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(result.outputs["y"], -x)
    order = result.order
    assert order.index(("vector", 0)) > order.index(("dma0", 5))  # after the third signal


@pytest.mark.parametrize("stream", INF2.stream_names)
def test_wait_runs_on_every_stream(stream):
    Program("p", (), (Stream("sync", (Signal(0),)) if stream != "sync" else
                      Stream("tensor", (Signal(0),)),
                      Stream(stream, (Wait(0, 1),)))).validate(INF2)


@pytest.mark.parametrize("args, message", [
    ((-1, 1), r"semaphore index -1 must be >= 0"),
    ((0, 0), r"wait value 0 must be >= 1"),
])
def test_wait_record_errors(args, message):
    with pytest.raises(InstructionError, match=message):
        Wait(*args)


def test_wait_on_a_semaphore_the_target_lacks():
    with pytest.raises(ProgramError, match=r"semaphore 32 exceeds the 32 semaphores of inf2"):
        validate_alone(Wait(32, 1), "vector")


def test_wait_that_can_never_be_satisfied_is_rejected_before_running():
    program = Program("p", (), (Stream("dma0", (Signal(0),)),
                                Stream("vector", (Wait(0, 1), Wait(0, 2)))))
    with pytest.raises(ProgramError, match=r"vector\[1\] wait sem=0 value=2: waits for 2 signals "
                                           r"of semaphore 0 but the program signals it 1 times "
                                           r"\(deadlock\)"):
        execute_functional(program)


def test_cyclic_waits_deadlock_at_run_time():
    program = Program("p", (), (Stream("vector", (Wait(0, 1), Signal(1))),
                                Stream("scalar", (Wait(1, 1), Signal(0)))))
    program.validate(INF2)  # every wait count is reachable on paper
    with pytest.raises(DeadlockError, match=r"program deadlocks; blocked: vector\[0\] wait sem=0 "
                                            r"value=1; scalar\[0\] wait sem=1 value=1"):
        execute_functional(program)


@given(seeds())
def test_waiting_for_a_later_signal_of_the_same_stream_deadlocks(seed):
    program = Program("p", (), (Stream("gpsimd", (Wait(2, 1), Signal(2))),
                                Stream("sync", (Signal(3),))))
    with pytest.raises(DeadlockError, match=r"blocked: gpsimd\[0\] wait sem=2 value=1$"):
        execute_functional(program, rng=np.random.default_rng(seed))


def test_the_runner_also_refuses_a_cyclic_wait():
    from emulator.runner import run
    program = Program("p", (), (Stream("vector", (Wait(0, 1), Signal(1))),
                                Stream("scalar", (Wait(1, 1), Signal(0)))))
    with pytest.raises(RuntimeError, match=r"deadlocks.*vector\[0\] wait sem=0 value=1"):
        run(program)
