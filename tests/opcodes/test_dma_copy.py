"""dma_copy: move elements between HBM and SBUF (and within each) on a DMA queue, with a cast.

The reference gathers and scatters with `element_indices` (the access-pattern definition) and
rounds with ml_dtypes/numpy; copies are exact, so results are compared bit for bit.
"""

from __future__ import annotations

from math import prod

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.memory import UninitializedReadError
from isa import (
    INF2,
    AccessPattern,
    DmaCopy,
    DramTensor,
    InstructionError,
    Program,
    ProgramBuilder,
    ProgramError,
    Space,
    Stream,
    hbm,
    psum,
    sbuf,
)
from tests.conftest import element_indices, execute_functional, rounded, validate_alone
from tests.strategies import access_patterns, dtypes, hbm_patterns, random_values, seeds


def scatter(shape: tuple[int, ...], dt, ap: AccessPattern, values: np.ndarray) -> np.ndarray:
    """A zero tensor of `shape` with `values` written at the elements `ap` addresses."""
    out = np.zeros(prod(shape), dt.storage)
    out[element_indices(ap).reshape(-1)] = values.reshape(-1)
    return out.reshape(shape)


@st.composite
def round_trips(draw):
    """x (HBM) -> strided SBUF pattern -> y (HBM), each step possibly changing dtype."""
    x = DramTensor("x", (draw(st.integers(1, 16)), draw(st.integers(1, 32))),
                   draw(dtypes()), "input")
    load_src = draw(hbm_patterns(x))
    on_chip = draw(access_patterns(Space.SBUF, draw(dtypes()), load_src.partitions,
                                   load_src.free_size, any_start=True))
    y = DramTensor("y", (load_src.elements + draw(st.integers(0, 8)),), draw(dtypes()), "output")
    store_dst = draw(hbm_patterns(y, rows=1, free_size=load_src.elements))
    return x, y, load_src, on_chip, store_dst


@given(round_trips(), seeds())
def test_round_trip_through_sbuf_gathers_casts_and_scatters(case, seed):
    x, y, load_src, on_chip, store_dst = case
    host = random_values(x.dtype, x.shape, seed)
    b = ProgramBuilder("round_trip")
    b.tensors.extend([x, y])
    b.emit("dma3", DmaCopy(on_chip, load_src))
    b.sync("dma3", "dma7", b.semaphore())
    b.emit("dma7", DmaCopy(store_dst, on_chip))
    out = execute_functional(b.build(), {"x": host}, check_initialized=False).outputs["y"]
    gathered = host.reshape(-1)[element_indices(load_src).reshape(-1)]
    expected = scatter(y.shape, y.dtype, store_dst, rounded(rounded(gathered, on_chip.dtype),
                                                            y.dtype))
    np.testing.assert_array_equal(out, expected)


@given(dtypes(), seeds())
def test_broadcast_row_and_reversed_columns(dt, seed):
    """Row stride 0 broadcasts one HBM row to every partition; a stride of -1 reverses it."""
    host = random_values(dt, (1, 8), seed)
    b = ProgramBuilder("broadcast")
    b.tensor("x", (1, 8), dt, "input")
    b.tensor("y", (32, 8), dt, "output")
    b.emit("dma0", DmaCopy(sbuf(32, 8, dt),
                           AccessPattern(Space.HBM, dt, 0, 32, 7 * dt.itemsize, ((-1, 8),), "x",
                                         0)))
    b.sync("dma0", "dma1", b.semaphore())
    b.emit("dma1", DmaCopy(hbm("y", 32, 8, 8, dt), sbuf(32, 8, dt)))
    out = execute_functional(b.build(), {"x": host}).outputs["y"]
    np.testing.assert_array_equal(out.view(f"u{dt.itemsize}"),
                                  np.tile(host[:, ::-1], (32, 1)).view(f"u{dt.itemsize}"))


def test_sbuf_to_sbuf_and_hbm_to_hbm_on_unaligned_partitions():
    b = ProgramBuilder("moves")
    b.tensor("x", (5, 4), "int16", "input")
    b.tensor("y", (5, 4), "int16", "output")
    b.tensor("z", (20,), "int32", "output")
    b.emit("dma0", DmaCopy(sbuf((3, 5), 4, "int16"), hbm("x", 5, 4, 4, "int16")))
    b.emit("dma0", DmaCopy(sbuf((77, 5), 4, "int16", offset=64), sbuf((3, 5), 4, "int16")))
    b.emit("dma0", DmaCopy(hbm("y", 5, 4, 4, "int16"), sbuf((77, 5), 4, "int16", offset=64)))
    b.emit("dma0", DmaCopy(hbm("z", 1, 0, 20, "int32"), hbm("x", 5, 4, 4, "int16")))
    x = np.arange(20, dtype=np.int16).reshape(5, 4) - 7
    outputs = execute_functional(b.build(), {"x": x}).outputs
    np.testing.assert_array_equal(outputs["y"], x)
    np.testing.assert_array_equal(outputs["z"], x.reshape(-1).astype(np.int32))


def test_reading_an_unwritten_output_tensor_raises():
    b = ProgramBuilder("uninit")
    b.tensor("y", (4, 8), "fp32", "output")
    b.emit("dma2", DmaCopy(sbuf(4, 8, "fp32"), hbm("y", 4, 8, 8, "fp32")))
    with pytest.raises(UninitializedReadError, match=r"dma2\[0\] dma_copy .*: read of "
                                                     r"hbm:y\[4x8\]\+0\[\[1,8\]\]:fp32: some of "
                                                     r"its bytes were never written"):
        execute_functional(b.build())


# ---- validation ---------------------------------------------------------------------------
X = DramTensor("x", (4, 8), "fp32", "input")


def test_element_count_mismatch():
    with pytest.raises(InstructionError, match=r"dma_copy moves 32 elements from "
                                               r"hbm:x\[4x8\]\+0\[\[1,8\]\]:fp32 but dst "
                                               r"sbuf\[0:4\]\+0\[\[1,9\]\]:fp32 holds 36"):
        DmaCopy(sbuf(4, 9, "fp32"), hbm("x", 4, 8, 8, "fp32"))


@pytest.mark.parametrize("instr, stream, message", [
    (DmaCopy(psum(4, 8), hbm("x", 4, 8, 8, "fp32")), "dma0",
     r"dma_copy operand dst=psum\[0:4\]\+0\[\[1,8\]\]:fp32: dma cannot use psum here "
     r"\(allowed: hbm, sbuf\)"),
    (DmaCopy(sbuf(4, 8, "fp32"), psum(4, 8)), "dma0", r"dma cannot use psum here"),
    (DmaCopy(sbuf(4, 8, "fp32"), hbm("x", 4, 8, 8, "fp32")), "vector",
     r"vector\[0\] dma_copy .*: dma_copy runs on dma, not on vector"),
    (DmaCopy(sbuf(200, 1, "fp32"), hbm("x", 200, 0, 1, "fp32")), "dma0",
     r"dma_copy operand dst: .*partitions 0\.\.199 exceed the 128 partitions"),
    (DmaCopy(sbuf(4, 8, "fp32", offset=192 * 1024 - 16), hbm("x", 4, 8, 8, "fp32")), "dma0",
     r"dma_copy operand dst: .*bytes 196592\.\.196623 fall outside the 196608-byte sbuf "
     r"partition"),
    (DmaCopy(sbuf(4, 8, "fp32"), hbm("x", 4, 8, 8, "fp32", offset=64)), "dma0",
     r"operand src touches bytes 64\.\.191 of tensor x, which has 128 bytes"),
    (DmaCopy(sbuf(4, 8, "fp32"), hbm("w", 4, 8, 8, "fp32")), "dma0",
     r"operand src names undeclared tensor 'w'"),
])
def test_dma_validation_errors(instr, stream, message):
    with pytest.raises(ProgramError, match=message):
        Program("p", (X,), (Stream(stream, (instr,)),)).validate(INF2)


def test_dma_on_a_compute_engine_is_rejected_for_every_engine():
    for stream in ("tensor", "vector", "scalar", "gpsimd", "sync"):
        with pytest.raises(ProgramError, match=rf"dma_copy runs on dma, not on {stream}"):
            validate_alone(DmaCopy(sbuf(4, 8, "fp32"), sbuf(4, 8, "fp32", offset=64)), stream)
