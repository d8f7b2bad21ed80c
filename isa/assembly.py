"""Text assembly for programs: a printer and a parser that round-trip exactly.

    .program tiled_matmul
    .tensor a input 1024x512 bf16
    .stream dma0
      dma_copy dst=sbuf[0:128]+0[[1,512]]:bf16 src=hbm:a[128x512]+0[[1,512]]:bf16
      signal sem=0
    .stream tensor
      wait sem=0 value=1
      matmul dst=psum[0:128]+0[[1,512]]:fp32 stationary=... moving=... accumulate=true

An instruction is its opcode followed by `field=value` for every field that differs from its
default, in the record's field order.  `#` starts a comment.  `format_program(parse(text))`
equals `text` for printed programs and `parse(format_program(p)) == p`.
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache

from isa.access import AccessPattern
from isa.dtypes import dtype
from isa.instructions import Instruction, InstructionError
from isa.opcodes import OPCODES
from isa.program import DramTensor, Program, ProgramError, Stream
from isa.target import stream_engine

_MISSING = dataclasses.MISSING


class AssemblyError(ValueError):
    """Text that does not parse; the message gives the line number and the offending text."""


# ---- printing --------------------------------------------------------------------------------
def _format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "(" + ",".join(str(int(v)) for v in value) + ")"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_instruction(instr: Instruction) -> str:
    parts = [instr.opcode]
    for f in dataclasses.fields(instr):
        value = getattr(instr, f.name)
        if f.default is not _MISSING and value == f.default and type(value) is type(f.default):
            continue
        parts.append(f"{f.name}={_format_value(value)}")
    return " ".join(parts)


def format_program(program: Program) -> str:
    lines = [f".program {program.name}"]
    for t in program.tensors:
        lines.append(f".tensor {t.name} {t.kind} {'x'.join(map(str, t.shape))} {t.dtype}")
    for s in program.streams:
        lines.append(f".stream {s.name}")
        lines.extend(f"  {format_instruction(i)}" for i in s.instructions)
    return "\n".join(lines) + "\n"


# ---- parsing ---------------------------------------------------------------------------------
def _parse_int_tuple(text: str) -> tuple[int, ...]:
    if not (text.startswith("(") and text.endswith(")")):
        raise ValueError(f"expected a tuple like (1,2), got {text!r}")
    inner = text[1:-1].strip()
    return tuple(int(v) for v in inner.split(",")) if inner else ()


def _parse_bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return text == "true"


def _is_operand(text: str) -> bool:
    return text.startswith(("sbuf[", "psum[", "hbm:"))


def _converter(hint) -> typing.Callable[[str], object]:
    """A parser for one field type of an instruction record, from its type hint."""
    if typing.get_origin(hint) is tuple:  # tuple[int, ...]: its args are (int, Ellipsis)
        return _parse_int_tuple
    args = set(typing.get_args(hint)) or {hint}
    optional = type(None) in args
    args.discard(type(None))

    def convert(text: str):
        if optional and text == "none":
            return None
        if AccessPattern in args and _is_operand(text):
            return AccessPattern.parse(text)
        if float in args:
            return float(text)
        if int in args and bool not in args:
            return int(text)
        if bool in args:
            return _parse_bool(text)
        if str in args:
            return text
        raise ValueError(f"cannot read {text!r} as {hint}")

    return convert


@cache
def _field_parsers(record: type) -> dict[str, typing.Callable[[str], object]]:
    hints = typing.get_type_hints(record)
    return {f.name: _converter(hints[f.name]) for f in dataclasses.fields(record)}


def parse_instruction(text: str) -> Instruction:
    opcode, *args = text.split()
    if opcode not in OPCODES:
        raise AssemblyError(f"unknown opcode {opcode!r}; known: {', '.join(OPCODES)}")
    record = OPCODES[opcode].record
    parsers = _field_parsers(record)
    values = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        if not sep:
            raise AssemblyError(f"{opcode}: argument {arg!r} is not field=value")
        if key not in parsers:
            raise AssemblyError(f"{opcode} has no field {key!r}; fields: {', '.join(parsers)}")
        if key in values:
            raise AssemblyError(f"{opcode}: field {key!r} given twice")
        try:
            values[key] = parsers[key](raw)
        except ValueError as err:
            raise AssemblyError(f"{opcode} {key}={raw}: {err}") from None
    try:
        return record(**values)
    except TypeError as err:
        raise AssemblyError(f"{opcode}: {err}") from None
    except InstructionError as err:
        raise AssemblyError(f"{opcode}: {err}") from None


def parse_program(text: str) -> Program:
    name = None
    tensors: list[DramTensor] = []
    streams: list[tuple[str, list[Instruction]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        directive = line.split()[0]  # whole words: ".streams" is not ".stream"
        try:
            if directive == ".program":
                if name is not None:
                    raise AssemblyError(f"second .program directive (program {name} is open)")
                _, name = _fields(line, 2)
            elif directive == ".tensor":
                _, tname, kind, shape, dt = _fields(line, 5)
                if any(t.name == tname for t in tensors):
                    raise AssemblyError(f"tensor {tname!r} declared twice")
                tensors.append(DramTensor(tname, tuple(int(n) for n in shape.split("x")),
                                          dtype(dt), kind))
            elif directive == ".stream":
                _, sname = _fields(line, 2)
                stream_engine(sname)  # an unknown stream name fails here, with its line number
                if any(s == sname for s, _ in streams):
                    raise AssemblyError(f"stream {sname!r} declared twice")
                streams.append((sname, []))
            elif line.startswith("."):
                raise AssemblyError(f"unknown directive {line.split()[0]!r}")
            else:
                if not streams:
                    raise AssemblyError("instruction before any .stream directive")
                streams[-1][1].append(parse_instruction(line))
        except (AssemblyError, ProgramError, ValueError) as err:
            raise AssemblyError(f"line {number}: {err}  [{raw.strip()}]") from None
    if name is None:
        raise AssemblyError("missing .program NAME directive")
    try:
        return Program(name, tuple(tensors), tuple(Stream(n, tuple(i)) for n, i in streams))
    except (ProgramError, ValueError) as err:
        raise AssemblyError(str(err)) from None


def _fields(line: str, count: int) -> list[str]:
    parts = line.split()
    if len(parts) != count:
        raise AssemblyError(f"{parts[0]} takes {count - 1} arguments, got {len(parts) - 1}")
    return parts
