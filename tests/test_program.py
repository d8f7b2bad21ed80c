"""Programs: tensors, streams, validation against the target, the builder; the opcode table.

Also the coverage rule of the project: every opcode of `isa.opcodes.OPCODES` has its own test
module tests/opcodes/test_<opcode>.py, and nothing else lives there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings

from isa import (
    INF2,
    OPCODES,
    DmaCopy,
    DramTensor,
    Engine,
    Instruction,
    MatMul,
    Memset,
    OpSpec,
    Program,
    ProgramBuilder,
    ProgramError,
    Signal,
    Space,
    Stream,
    TensorCopy,
    Wait,
    hbm,
    opcode,
    psum,
    sbuf,
    stream_engine,
)
from isa.opcodes import Operand
from tests.strategies import INSTRUCTION_STRATEGIES, programs

OPCODE_TESTS = Path(__file__).parent / "opcodes"


# ---- coverage -----------------------------------------------------------------------------
def test_every_opcode_has_a_test_module():
    modules = {p.stem.removeprefix("test_") for p in OPCODE_TESTS.glob("test_*.py")}
    assert modules == set(OPCODES), (
        f"missing: {sorted(set(OPCODES) - modules)}; stale: {sorted(modules - set(OPCODES))}")


def test_every_opcode_has_an_instruction_strategy():
    assert INSTRUCTION_STRATEGIES == set(OPCODES), (
        f"tests/strategies.py has no instruction strategy for "
        f"{sorted(set(OPCODES) - INSTRUCTION_STRATEGIES)}")


# ---- the opcode table ---------------------------------------------------------------------
def test_opcode_table_is_consistent():
    for name, spec in OPCODES.items():
        assert isinstance(spec, OpSpec) and spec.name == name == spec.record.opcode
        assert issubclass(spec.record, Instruction) and spec.engines and callable(spec.semantics)
        assert spec.cost and spec.summary
        for operand in spec.operands.values():
            assert operand.role in ("in", "out") and operand.spaces
    assert opcode("matmul") is OPCODES["matmul"]


def test_unknown_opcode_lookup_raises():
    with pytest.raises(KeyError, match=r"unknown opcode 'matmull'; known: wait, signal"):
        opcode("matmull")


def test_operand_role_must_be_in_or_out():
    with pytest.raises(ValueError, match=r"operand role 'inout' must be 'in' or 'out'"):
        Operand("inout", frozenset({Space.SBUF}))


def test_operand_spaces_are_the_opcode_rule_and_the_engine_ports():
    tensor_copy = OPCODES["tensor_copy"]
    assert tensor_copy.spaces("src", Engine.VECTOR) == {Space.SBUF, Space.PSUM}
    assert tensor_copy.spaces("src", Engine.GPSIMD) == {Space.SBUF}
    assert OPCODES["matmul"].spaces("moving", Engine.TENSOR) == {Space.SBUF}
    assert OPCODES["dma_copy"].spaces("dst", Engine.DMA) == {Space.SBUF, Space.HBM}


def test_reads_and_writes_follow_the_roles():
    mm = MatMul(psum(4, 8), sbuf(2, 4, "bf16"), sbuf(2, 8, "bf16", offset=64))
    assert set(mm.reads()) == {"stationary", "moving"} and set(mm.writes()) == {"dst"}
    acc = MatMul(psum(4, 8), sbuf(2, 4, "bf16"), sbuf(2, 8, "bf16", offset=64), True)
    assert set(acc.reads()) == {"stationary", "moving", "dst"} and acc.accumulates()
    assert Wait(0, 1).reads() == {} and Signal(0).writes() == {}


# ---- tensors and streams ------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (("2x", (4,), "fp32"), r"tensor name '2x' must be an identifier"),
    (("x", (), "fp32"), r"tensor x shape \(\) must have sizes >= 1"),
    (("x", (4, 0), "fp32"), r"tensor x shape \(4, 0\) must have sizes >= 1"),
    (("x", (4,), "fp32", "weights"), r"tensor x kind 'weights' must be one of input, output, "
                                     r"scratch"),
])
def test_dram_tensor_errors(args, message):
    with pytest.raises(ProgramError, match=message):
        DramTensor(*args)


def test_dram_tensor_bytes():
    assert DramTensor("x", (3, 5), "bf16").nbytes == 30
    with pytest.raises(ValueError, match=r"unknown dtype 'fp64'"):
        DramTensor("x", (4,), "fp64")


@pytest.mark.parametrize("name", ["foo", "dmax", "dma1x", "Tensor", ""])
def test_unknown_stream_name_raises(name):
    with pytest.raises(ValueError, match=rf"unknown stream '{name}'; streams are engines "
                                         r"\(tensor, vector, scalar, gpsimd, sync\) or dma<N>"):
        Stream(name)
    with pytest.raises(ValueError, match=rf"unknown stream '{name}'"):
        ProgramBuilder("p").emit(name, Signal(0))


def test_stream_engines():
    assert stream_engine("dma15") is Engine.DMA and stream_engine("gpsimd") is Engine.GPSIMD


@pytest.mark.parametrize("name", ["dma16"])
def test_stream_that_the_target_lacks_fails_validation(name):
    program = Program("p", (), (Stream(name, (Signal(0),)),))
    with pytest.raises(ProgramError, match=rf"stream '{name}' does not exist on inf2 \(streams: "
                                           r"tensor, vector, .*, dma15\)"):
        program.validate(INF2)


def test_duplicate_tensors_and_streams_raise():
    x = DramTensor("x", (4,), "fp32")
    with pytest.raises(ProgramError, match=r"program p: tensor 'x' declared twice"):
        Program("p", (x, x))
    with pytest.raises(ProgramError, match=r"program p: stream 'vector' declared twice"):
        Program("p", (), (Stream("vector"), Stream("vector")))


def test_program_lookup_and_naming():
    program = Program("p", (), (Stream("vector", (Memset(sbuf(4, 8, "fp32"), 1.0),)),
                                Stream("sync", (Signal(0), Signal(0)))))
    assert program.instruction_count == 3
    assert program.stream("sync").instructions == (Signal(0), Signal(0))
    assert program.locate("vector", 0) == (
        "vector[0] memset dst=sbuf[0:4]+0[[1,8]]:fp32 value=1.0")
    with pytest.raises(KeyError, match=r"program p has no stream 'tensor'"):
        program.stream("tensor")


# ---- validation ---------------------------------------------------------------------------
@settings(max_examples=40)
@given(programs())
def test_generated_programs_are_valid(program):
    program.validate(INF2)


def _load(dst, src, *tensors):
    return Program("p", tensors, (Stream("dma0", (DmaCopy(dst, src),)),))


X = DramTensor("x", (4, 8), "fp32", "input")


@pytest.mark.parametrize("program, message", [
    (_load(sbuf(4, 8, "fp32"), hbm("y", 4, 8, 8, "fp32"), X),
     r"dma0\[0\] dma_copy .*: operand src names undeclared tensor 'y'"),
    (_load(sbuf(4, 16, "bf16"), hbm("x", 4, 16, 16, "bf16"), X),
     r"operand src reads x as bf16 but it is declared fp32"),
    (_load(sbuf(4, 8, "fp32"), hbm("x", 4, 8, 8, "fp32", offset=4), X),
     r"operand src touches bytes 4\.\.131 of tensor x, which has 128 bytes"),
    (_load(sbuf(4, 8, "fp32"), hbm("x", 4, 9, 8, "fp32"), X),
     r"operand src touches bytes 0\.\.139 of tensor x, which has 128 bytes"),
    (Program("p", (), (Stream("vector", (MatMul(psum(4, 8), sbuf(2, 4, "bf16"),
                                                sbuf(2, 8, "bf16", offset=64)),)),)),
     r"vector\[0\] matmul .*: matmul runs on tensor, not on vector"),
    (Program("p", (), (Stream("gpsimd", (TensorCopy(sbuf(4, 8, "fp32"), psum(4, 8)),)),)),
     r"gpsimd\[0\] tensor_copy .*: tensor_copy operand src=psum\[0:4\]\+0\[\[1,8\]\]:fp32: "
     r"gpsimd cannot use psum here \(allowed: sbuf\)"),
    (Program("p", (), (Stream("vector", (TensorCopy(sbuf((32, 48), 8, "fp32"),
                                                    sbuf((0, 48), 8, "fp32", offset=64)),)),)),
     r"tensor_copy operand dst: an operand of 48 partitions may start at partition \(0, 64\), "
     r"not 32"),
    (Program("p", (), (Stream("vector", (Signal(32),)),)),
     r"vector\[0\] signal sem=32: semaphore 32 exceeds the 32 semaphores of inf2"),
    (Program("p", (), (Stream("vector", (Signal(3),)), Stream("scalar", (Signal(3),)))),
     r"scalar\[0\] signal sem=3: semaphore 3 is already signalled by stream vector; each "
     r"semaphore has one signalling stream"),
    (Program("p", (), (Stream("vector", (Signal(1),)), Stream("scalar", (Wait(1, 2),)))),
     r"scalar\[0\] wait sem=1 value=2: waits for 2 signals of semaphore 1 but the program "
     r"signals it 1 times \(deadlock\)"),
    (Program("p", (), (Stream("scalar", (Wait(5, 1),)),)),
     r"waits for 1 signals of semaphore 5 but the program signals it 0 times \(deadlock\)"),
])
def test_validate_names_the_instruction_and_the_problem(program, message):
    with pytest.raises(ProgramError, match=message):
        program.validate(INF2)


def test_dma_queues_are_not_bound_by_the_partition_rule():
    # DMA addresses any partitions; compute engines follow the quadrant rule.
    _load(sbuf((17, 4), 8, "fp32"), hbm("x", 4, 8, 8, "fp32"), X).validate(INF2)


# ---- the builder --------------------------------------------------------------------------
def test_builder_counts_semaphores_and_signals():
    b = ProgramBuilder("pipeline")
    b.tensor("x", (4, 8), "fp32", "input")
    tile = sbuf(4, 8, "fp32")
    assert b.emit("dma0", DmaCopy(tile, hbm("x", 4, 8, 8, "fp32"))) == 0
    first, second = b.semaphore(), b.semaphore()
    assert (first, second) == (0, 1)
    b.sync("dma0", "vector", first)
    assert b.signal("dma0", first) == 2  # a second signal of the same semaphore counts to 2
    b.sync("vector", "scalar", second)
    program = b.build()
    assert program.name == "pipeline" and [t.name for t in program.tensors] == ["x"]
    assert [s.name for s in program.streams] == ["dma0", "vector", "scalar"]
    assert program.stream("dma0").instructions[1:] == (Signal(0), Signal(0))
    assert program.stream("vector").instructions == (Wait(0, 1), Signal(1))
    assert program.stream("scalar").instructions == (Wait(1, 1),)
    program.validate(INF2)


def test_a_bare_dma_stream_is_not_a_queue():
    with pytest.raises(ValueError, match=r"unknown stream 'dma'.*dma<N>"):
        stream_engine("dma")
    with pytest.raises(ValueError, match=r"unknown stream 'dma'"):
        Program("p", (), (Stream("dma", (Signal(0),)),))


# ---- the instruction table ------------------------------------------------------------------
def test_instruction_table_numbers_equal_records_once_and_gives_each_signal_a_slot():
    load = DmaCopy(sbuf(4, 8, "fp32"), hbm("x", 4, 8, 8, "fp32"))
    copy = TensorCopy(sbuf(4, 8, "fp32", offset=64), sbuf(4, 8, "fp32"))
    program = Program("p", (DramTensor("x", (4, 8), "fp32", "input"),), (
        Stream("dma0", (load, Signal(5), DmaCopy(sbuf(4, 8, "fp32"), hbm("x", 4, 8, 8, "fp32")),
                        Signal(5), Signal(2))),
        Stream("vector", (Wait(5, 2), copy, Wait(2, 1), copy, Wait(7, 1), Wait(5, 3)))))
    table = program.table
    assert table.stream_first.tolist() == [0, 5, 11]
    assert table.stream_of.tolist() == [0] * 5 + [1] * 6
    assert table.code.tolist() == [0, 2, 0, 2, 2, 1, 0, 1, 0, 1, 1]
    # Equal records (built apart) share a number; numbers follow first appearance.
    assert table.distinct == (load, copy)
    assert table.record.tolist() == [0, -1, 0, -1, -1, -1, 1, -1, 1, -1, -1]
    # Slots by semaphore, then program order: sem 2's one signal is slot 0, sem 5's are 1, 2.
    assert table.slot[[1, 3, 4]].tolist() == [1, 2, 0]
    assert table.value[[1, 3, 4]].tolist() == [1, 2, 1]  # which signal of its semaphore
    # wait(5, 2) needs slot 2, wait(2, 1) slot 0; sem 7 is never signalled and sem 5 only
    # twice: those waits name the slot no signal fills.
    assert table.never == 3 and table.n_slots == 4
    assert table.slot[[5, 7, 9, 10]].tolist() == [2, 0, 3, 3]
    assert table.signals_of(5) == 2 and table.signals_of(7) == 0
    assert program.table is table  # computed once


@settings(max_examples=40, deadline=None)
@given(programs())
def test_instruction_table_matches_the_records_row_by_row(program):
    table = program.table
    rows = [instr for stream in program.streams for instr in stream.instructions]
    assert len(rows) == len(table.code)
    counts: dict[int, int] = {}
    for row, instr in enumerate(rows):
        if isinstance(instr, Wait):
            assert table.code[row] == 1 and table.sem[row] == instr.sem
            assert table.value[row] == instr.value
        elif isinstance(instr, Signal):
            counts[instr.sem] = counts.get(instr.sem, 0) + 1
            assert table.code[row] == 2 and table.value[row] == counts[instr.sem]
        else:
            assert table.code[row] == 0 and table.distinct[table.record[row]] == instr
    assert len(set(table.distinct)) == len(table.distinct)
