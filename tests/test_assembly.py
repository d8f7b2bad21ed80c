"""Text assembly: print -> parse -> print is the identity, parse(print(p)) == p, and every
malformed text raises AssemblyError naming its line."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from emulator.runner import run
from isa import (
    AssemblyError,
    TensorReduce,
    format_program,
    parse_instruction,
    parse_program,
    sbuf,
)
from isa.assembly import format_instruction
from tests.conftest import readme_program
from tests.strategies import instructions, programs

README_PROGRAM = readme_program()


@settings(max_examples=60)
@given(programs(collectives=True))
def test_programs_round_trip_through_text(program):
    text = format_program(program)
    parsed = parse_program(text)
    assert parsed == program
    assert format_program(parsed) == text


@settings(max_examples=120)
@given(instructions())
def test_every_opcode_round_trips_as_one_line(instr):
    line = format_instruction(instr)
    assert "\n" not in line and line.split()[0] == instr.opcode
    assert parse_instruction(line) == instr
    assert str(instr) == line


def test_tuple_fields_print_and_parse():
    reduce = TensorReduce(sbuf(4, 2, "fp32"), sbuf(4, (2, 3, 5), "fp32", offset=64), "max", (2, 3))
    line = format_instruction(reduce)
    assert line.endswith("op=max axes=(2,3)")
    assert parse_instruction(line) == reduce
    one = parse_instruction(line.replace("axes=(2,3)", "axes=(3)").replace("[[1,2]]", "[[1,6]]"))
    assert one.axes == (3,)


def test_readme_program_round_trips_and_runs():
    program = parse_program(README_PROGRAM)
    assert format_program(program) == README_PROGRAM
    x = np.arange(128 * 64, dtype=np.float32).reshape(128, 64)
    np.testing.assert_array_equal(run(program, {"x": x}).outputs["y"], 2 * x)


def test_comments_blank_lines_and_indentation_are_ignored():
    text = """
    # a comment line
    .program  p   # the name
    .tensor x input 4x8 fp32

    .stream vector
    memset dst=sbuf[0:4]+0[[1,8]]:fp32   value=1.5   # trailing comment
    """
    program = parse_program(text)
    assert program.name == "p" and program.tensor_map["x"].shape == (4, 8)
    assert program.stream("vector").instructions[0].value == 1.5
    assert parse_program(format_program(program)) == program


def test_default_fields_are_omitted_and_accepted_explicitly():
    line = "matmul dst=psum[0:4]+0[[1,8]]:fp32 stationary=sbuf[0:2]+0[[1,4]]:bf16 " \
           "moving=sbuf[0:2]+64[[1,8]]:bf16"
    explicit = parse_instruction(line + " accumulate=false")
    assert format_instruction(explicit) == line
    assert parse_instruction(line + " accumulate=true").accumulate is True
    act = parse_instruction("activation dst=sbuf[0:4]+0[[1,8]]:fp32 src=sbuf[0:4]+32[[1,8]]:fp32 "
                            "func=exp scale=sbuf[0:4]+64[[1,1]]:fp32 bias=none")
    assert act.bias is None and act.scale == sbuf(4, 1, "fp32", offset=64)


# ---- errors -------------------------------------------------------------------------------
HEAD = ".program p\n.tensor x input 4x8 fp32\n.stream vector\n"
MEMSET = "memset dst=sbuf[0:4]+0[[1,8]]:fp32 value=1.0"


@pytest.mark.parametrize("text, message", [
    (HEAD + "  memsett dst=sbuf[0:4]+0[[1,8]]:fp32 value=1.0\n",
     r"line 4: unknown opcode 'memsett'; known: wait, signal, .*  \[memsett dst="),
    (HEAD + "  " + MEMSET + " colour=red\n",
     r"line 4: memset has no field 'colour'; fields: dst, value  \[memset "),
    (HEAD + "  memset dst=sbuf[0:4]+0[[1,8]:fp32 value=1.0\n",
     r"line 4: memset dst=sbuf\[0:4\]\+0\[\[1,8\]:fp32: malformed access pattern"),
    (HEAD + "  memset dst=sbuf[0:4]+2[[1,8]]:fp32 value=1.0\n",
     r"line 4: memset dst=.*: byte offset 2 is not aligned to the fp32 element size"),
    (HEAD + "  memset dst=sbuf[0:4]+0[[1,8]]:fp64 value=1.0\n",
     r"line 4: memset dst=.*: unknown dtype 'fp64'"),
    (HEAD + "  " + MEMSET + " value=2.0\n",
     r"line 4: memset: field 'value' given twice"),
    (HEAD + "  memset dst=sbuf[0:4]+0[[1,8]]:fp32 1.0\n",
     r"line 4: memset: argument '1\.0' is not field=value"),
    (HEAD + "  memset dst=sbuf[0:4]+0[[1,8]]:fp32 value=one\n",
     r"line 4: memset value=one: could not convert string to float: 'one'"),
    (HEAD + "  memset dst=sbuf[0:4]+0[[1,8]]:fp32\n",
     r"line 4: memset: .*missing 1 required positional argument: 'value'"),
    (HEAD + "  activation dst=sbuf[0:4]+0[[1,8]]:fp32 src=sbuf[0:4]+0[[1,8]]:fp32 func=cube\n",
     r"line 4: activation: unknown activation 'cube'; supported: identity"),
    (HEAD + "  iota dst=sbuf[0:4]+0[[1,8]]:fp32 steps=[1]\n",
     r"line 4: iota steps=\[1\]: expected a tuple like \(1,2\), got '\[1\]'"),
    (HEAD + "  matmul dst=psum[0:4]+0[[1,8]]:fp32 stationary=sbuf[0:2]+0[[1,4]]:bf16 "
     "moving=sbuf[0:2]+64[[1,8]]:bf16 accumulate=yes\n",
     r"line 4: matmul accumulate=yes: expected true or false, got 'yes'"),
    (HEAD + "  wait sem=zero value=1\n",
     r"line 4: wait sem=zero: invalid literal for int\(\) with base 10: 'zero'"),
    (".tensor x input 4x8 fp32\n.stream vector\n  " + MEMSET + "\n",
     r"^missing \.program NAME directive$"),
    (".program p\n.tenser x input 4x8 fp32\n",
     r"line 2: unknown directive '\.tenser'  \[\.tenser x input 4x8 fp32\]"),
    (".program p\n.tensor x input 4x8\n",
     r"line 2: \.tensor takes 4 arguments, got 3"),
    (".program p\n.tensor x input 4by8 fp32\n",
     r"line 2: invalid literal for int\(\) with base 10: '4by8'"),
    (".program p\n.tensor x weights 4x8 fp32\n",
     r"line 2: tensor x kind 'weights' must be one of input, output, scratch"),
    (".program p\n.tensor x input 4x8 fp64\n", r"line 2: unknown dtype 'fp64'"),
    (".program\n", r"line 1: \.program takes 1 arguments, got 0"),
    (".program p\n  " + MEMSET + "\n",
     r"line 2: instruction before any \.stream directive  \[memset "),
    (".program p\n.stream vectr\n  " + MEMSET + "\n",
     r"line 2: unknown stream 'vectr'; streams are engines"),
    (".program p\n.stream vector\n.stream vector\n",
     r"line 3: stream 'vector' declared twice  \[\.stream vector\]"),
    (".program p\n.tensor x input 4 fp32\n.tensor x output 4 fp32\n",
     r"line 3: tensor 'x' declared twice"),
    (".program p\n.program q\n", r"line 2: second \.program directive \(program p is open\)"),
    (".program p\n.streams vector\n", r"line 2: unknown directive '\.streams'"),
    (".programme p\n", r"line 1: unknown directive '\.programme'"),
    (".program p\n.tensors x input 4 fp32\n", r"line 2: unknown directive '\.tensors'"),
])
def test_assembly_errors_name_the_line_and_the_problem(text, message):
    with pytest.raises(AssemblyError, match=message):
        parse_program(text)


def test_parse_instruction_errors_without_a_program():
    with pytest.raises(AssemblyError, match=r"unknown opcode 'nop'"):
        parse_instruction("nop")
    with pytest.raises(AssemblyError, match=r"signal: .*unexpected keyword|signal has no field"):
        parse_instruction("signal sem=1 value=2")
