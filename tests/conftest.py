"""Shared test helpers: run one instruction through the real functional executor, an independent
element-index model of access patterns, and the numeric tolerance of each destination dtype.

`run_instruction` builds a small Program around one instruction the way a kernel would: DMA the
inputs HBM -> SBUF (through an SBUF staging tile and a Vector/Scalar copy for PSUM operands),
semaphores between streams, the instruction on its engine's stream, and the results back to HBM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings

from isa import (
    INF2,
    AccessPattern,
    DmaCopy,
    DType,
    Instruction,
    Program,
    ProgramBuilder,
    Space,
    TensorCopy,
    dtype,
    hbm,
)
from tests.strategies import STAGING

settings.register_profile(
    "ncemu", deadline=None, max_examples=25,
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large))
settings.load_profile("ncemu")

TARGET = INF2

# (rtol, atol) against a float64 reference rounded to the destination dtype: a little over one
# unit in the last place of each type (fp32 has 24 significant bits, bf16 8, fp16 11, e4m3 4,
# e5m2 3); atol covers results that round to zero or to a subnormal.
TOLERANCE: dict[str, tuple[float, float]] = {
    "fp32": (1e-6, 1e-6),
    "tf32": (2e-3, 1e-6),
    "bf16": (1e-2, 1e-6),
    "fp16": (2e-3, 1e-6),
    "fp8_e4m3": (0.13, 2e-3),
    "fp8_e5m2": (0.26, 2e-5),
}


def readme_program() -> str:
    """The text-assembly example of README.md, exactly as a reader sees it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"^```\n(\.program .*?)^```", readme, re.S | re.M)
    assert block, "README.md lost its text-assembly example"
    return block.group(1)


def assert_matches(actual: np.ndarray, expected: np.ndarray, dt: DType | str,
                   rtol: float | None = None, atol: float | None = None) -> None:
    """Compare a result in `dt` with a reference: exact for integers, TOLERANCE for floats."""
    dt = dtype(dt)
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if not dt.is_float:
        assert actual.dtype == dt.storage
        np.testing.assert_array_equal(actual, expected.astype(dt.storage))
        return
    default_rtol, default_atol = TOLERANCE[dt.name]
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                               rtol=default_rtol if rtol is None else rtol,
                               atol=default_atol if atol is None else atol, equal_nan=True)


def rounded(values: np.ndarray, dt: DType | str) -> np.ndarray:
    """`values` rounded to `dt` with ml_dtypes / numpy directly (not through isa.dtypes).

    Floats round to nearest even from fp32 (tf32: 10 mantissa bits); integers round half to
    even and saturate, as the engines' output converters do.
    """
    dt = dtype(dt)
    values = np.asarray(values)
    if dt.is_float:
        as_fp32 = values.astype(np.float32)
        if dt.name == "tf32":
            # 11 significant bits (x = m * 2^e, m in [0.5, 1)): the quantum is 2^(e - 11), and
            # 2^-136 below the smallest normal (fp32's exponent range, 10 explicit bits).
            wide = as_fp32.astype(np.float64)
            _, exponent = np.frexp(wide)
            quantum = np.ldexp(1.0, np.maximum(exponent, -125) - 11)
            with np.errstate(over="ignore", invalid="ignore"):
                out = (np.round(wide / quantum) * quantum).astype(np.float32)
            return np.where(np.isfinite(wide), out, as_fp32)
        return as_fp32.astype(dt.storage)
    info = np.iinfo(dt.storage)
    if values.dtype.kind not in "iu":  # ml_dtypes floats have kind "V", not "f"
        values = np.nan_to_num(np.rint(values.astype(np.float64)), nan=0.0,
                               posinf=info.max, neginf=info.min)
    return np.clip(values, info.min, info.max).astype(dt.storage)


def element_indices(ap: AccessPattern, target=TARGET) -> np.ndarray:
    """Flat element index, in the operand's dtype, of every element of `ap`, from the definition.

    On chip, row p of the operand is partition `partition_start + p` of the memory seen as
    [partitions, partition_bytes / itemsize]; in HBM, rows are `partition_stride` elements
    apart in the tensor.  Each free axis adds stride * index.
    """
    size = ap.dtype.itemsize
    grids = np.indices(ap.shape, dtype=np.int64)
    if ap.space is Space.HBM:
        index = grids[0] * ap.partition_stride
    else:
        index = (ap.partition_start + grids[0]) * (target.partition_bytes(ap.space) // size)
    index = index + ap.offset // size
    for axis, (stride, _) in enumerate(ap.axes, start=1):
        index = index + stride * grids[axis]
    return index


# ---- the single-instruction harness ---------------------------------------------------------
def execute_functional(program: Program, inputs: dict[str, np.ndarray] | None = None,
                       rng: np.random.Generator | None = None, check_initialized: bool = True):
    """Run `program` on the functional executor alone (no timing model): a FunctionalResult."""
    from emulator.functional import execute
    return execute(program, inputs or {}, TARGET, rng=rng, check_initialized=check_initialized)



@dataclass
class Harness:
    """A program around one instruction, its host inputs, and where each output lands in HBM."""

    program: Program
    inputs: dict[str, np.ndarray]
    outputs: dict[str, tuple[str, tuple[int, ...]]]  # operand -> (HBM tensor, operand shape)

    def run(self, rng: np.random.Generator | None = None, check_initialized: bool = True
            ) -> dict[str, np.ndarray]:
        result = execute_functional(self.program, self.inputs, rng, check_initialized)
        return {name: result.outputs[tensor].reshape(shape)
                for name, (tensor, shape) in self.outputs.items()}


def build_single(instr: Instruction, inputs: dict[str, np.ndarray], stream: str | None = None
                 ) -> Harness:
    """Wrap `instr` in a program: load `inputs` (one array per read operand, in the operand's
    logical shape), run `instr` on `stream` (its opcode's default engine if None), store every
    written operand."""
    stream = stream or instr.spec().engines[0].value
    reads, writes = instr.reads(), instr.writes()
    if set(inputs) != set(reads):
        raise ValueError(f"{instr.opcode} reads {sorted(reads)}, inputs given {sorted(inputs)}")
    helper = "scalar" if stream == "vector" else "vector"  # moves PSUM operands in and out
    b = ProgramBuilder(f"single_{instr.opcode}")
    staging = [STAGING]

    def staging_tile(ap: AccessPattern) -> AccessPattern:
        tile = AccessPattern(Space.SBUF, ap.dtype, ap.partition_start, ap.partitions,
                             staging[0], ((1, ap.free_size),))
        staging[0] += -(-ap.free_size * ap.dtype.itemsize // 64) * 64
        assert staging[0] <= TARGET.sbuf_partition_bytes, "staging area overflow"
        return tile

    host, to_psum = {}, []
    for name, ap in reads.items():
        tensor = f"in_{name}"
        b.tensor(tensor, (ap.partitions, ap.free_size), ap.dtype, "input")
        host[tensor] = np.asarray(inputs[name]).reshape(ap.partitions, ap.free_size)
        src = hbm(tensor, ap.partitions, ap.free_size, ap.free_size, ap.dtype)
        if ap.space is Space.PSUM:
            tile = staging_tile(ap)
            to_psum.append(TensorCopy(ap, tile))
            ap = tile
        b.emit("dma0", DmaCopy(ap, src))
    if reads:
        if to_psum:
            b.sync("dma0", helper, b.semaphore())
            for copy in to_psum:
                b.emit(helper, copy)
            b.sync(helper, stream, b.semaphore())
        else:
            b.sync("dma0", stream, b.semaphore())
    b.emit(stream, instr)
    stores, from_psum, outputs = [], [], {}
    for name, ap in writes.items():
        tensor = f"out_{name}"
        b.tensor(tensor, (ap.partitions, ap.free_size), ap.dtype, "output")
        outputs[name] = (tensor, ap.shape)
        if ap.space is Space.PSUM:
            tile = staging_tile(ap)
            from_psum.append(TensorCopy(tile, ap))
            ap = tile
        stores.append(DmaCopy(hbm(tensor, ap.partitions, ap.free_size, ap.free_size, ap.dtype),
                              ap))
    b.sync(stream, "dma1", b.semaphore())
    if from_psum:
        b.sync(stream, helper, b.semaphore())
        for copy in from_psum:
            b.emit(helper, copy)
        b.sync(helper, "dma1", b.semaphore())
    for store in stores:
        b.emit("dma1", store)
    return Harness(b.build(), host, outputs)


def run_instruction(instr: Instruction, inputs: dict[str, np.ndarray] | None = None,
                    stream: str | None = None, rng: np.random.Generator | None = None
                    ) -> dict[str, np.ndarray]:
    """Run `instr` alone through the functional executor; its written operands, by name."""
    return build_single(instr, inputs or {}, stream).run(rng)


def validate_alone(instr: Instruction, stream: str | None = None, target=TARGET) -> None:
    """Validate a program that holds only `instr`, on `stream` (its default engine if None)."""
    from isa import Stream
    stream = stream or instr.spec().engines[0].value
    Program("alone", (), (Stream(stream, (instr,)),)).validate(target)


# ---- collectives ----------------------------------------------------------------------------
def collective_core(name: str, make, x: tuple[int, int] | None, y: tuple[int, int] | None,
                    dt: str = "fp32") -> Program:
    """One core's program around one collective: HBM x -> SBUF (dma0), the collective on dma1
    between SBUF tiles, SBUF -> HBM y (dma2), ordered by semaphores.  `make(dst, src)` builds
    the collective from its SBUF operands (None where the core has no such operand)."""
    from isa import ProgramBuilder, sbuf
    b = ProgramBuilder(name)
    src = dst = None
    if x is not None:
        b.tensor("x", x, dt, "input")
        src = sbuf(x[0], x[1], dt)
        b.emit("dma0", DmaCopy(src, hbm("x", x[0], x[1], x[1], dt)))
        b.sync("dma0", "dma1", b.semaphore())
    if y is not None:
        b.tensor("y", y, dt, "output")
        dst = sbuf(y[0], y[1], dt, offset=64 * 1024)
    b.emit("dma1", make(dst, src))
    if y is not None:
        b.sync("dma1", "dma2", b.semaphore())
        b.emit("dma2", DmaCopy(hbm("y", y[0], y[1], y[1], dt), dst))
    return b.build()


def run_cores(programs: list[Program], inputs: list[dict[str, np.ndarray]], ranks: list[int],
              machine: str = "inf2.24xlarge") -> dict[int, dict[str, np.ndarray]]:
    """Run program k on core ranks[k] of `machine` (12 cores on 6 chips): outputs by core."""
    from emulator.system import run_system
    return run_system(programs, inputs, machine, ranks=ranks).outputs
