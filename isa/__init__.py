"""The contract between compiler and machine: dtypes, memory spaces, access patterns, opcodes,
instruction records, programs, text assembly and the architecture limits (`Target`)."""

from isa.access import AccessPattern, hbm, psum, sbuf
from isa.assembly import AssemblyError, format_program, parse_instruction, parse_program
from isa.dtypes import DTYPES, DType, cast, dtype
from isa.instructions import (
    Activation,
    AffineSelect,
    BnAggr,
    BnStats,
    DmaCopy,
    Instruction,
    InstructionError,
    Iota,
    MatMul,
    Memset,
    Reciprocal,
    Signal,
    TensorCopy,
    TensorReduce,
    TensorScalar,
    TensorTensor,
    TensorTensorScan,
    Transpose,
    Wait,
)
from isa.opcodes import OPCODES, OpSpec, opcode
from isa.program import DramTensor, Program, ProgramBuilder, ProgramError, Stream
from isa.target import INF2, TARGETS, Engine, Space, Target, stream_engine, target

__all__ = [
    "AccessPattern", "Activation", "AffineSelect", "AssemblyError", "BnAggr", "BnStats", "DTYPES",
    "DType", "DmaCopy", "DramTensor", "Engine", "INF2", "Instruction", "InstructionError", "Iota",
    "MatMul", "Memset", "OPCODES", "OpSpec", "Program", "ProgramBuilder", "ProgramError",
    "Reciprocal", "Signal", "Space", "Stream", "TARGETS", "Target", "TensorCopy", "TensorReduce",
    "TensorScalar", "TensorTensor", "TensorTensorScan", "Transpose", "Wait", "cast", "dtype",
    "format_program", "hbm", "opcode", "parse_instruction", "parse_program", "psum", "sbuf",
    "stream_engine", "target",
]
