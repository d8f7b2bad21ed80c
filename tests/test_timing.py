"""Timing model: exact times of tiny programs (arithmetic in the comments) and its properties."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.machine import INFERENTIA2, NEURONCORE_V2
from emulator.report import memory_traffic
from emulator.runner import run
from emulator.timing import TimingDeadlock, encode, schedule
from isa import (
    Activation,
    DmaCopy,
    MatMul,
    ProgramBuilder,
    TensorCopy,
    TensorTensor,
    Wait,
    hbm,
    psum,
    sbuf,
)
from kernels.programs import tiled_matmul, tiled_matmul_inputs

SPEC = NEURONCORE_V2


def timed(builder: ProgramBuilder):
    return schedule(builder.build(), SPEC)


def one(stream: str, instr) -> ProgramBuilder:
    b = ProgramBuilder("one")
    b.emit(stream, instr)
    return b


# ---- exact times of single instructions -------------------------------------------------------
def test_isolated_bf16_matmul_128x128x512():
    # LoadStationary ceil(128/4) = 32 cycles, exposed (nothing to hide behind).
    # Issue interval max(N=512, 64) = 512 cycles.  Result after fill + stream + drain of the
    # 128x128 weight-stationary array: (128-1) + 512 + (128-1) = 766 cycles.
    # Latency = (32 + 766) / 2.8 GHz = 285 ns.
    mm = MatMul(psum(128, 512), sbuf(128, 128, "bf16"), sbuf(128, 512, "bf16", offset=256))
    s = timed(one("tensor", mm))
    assert s.start_ns[0] == pytest.approx(32 / 2.8)
    assert s.end_ns[0] == pytest.approx(798 / 2.8)
    assert s.latency_ns == pytest.approx(285.0)


def test_fp32_matmul_is_four_times_slower_to_issue():
    # fp32: issue 4 * 512 = 2048 cycles, load 4 * 32 = 128, result 127 + 4*512 + 127 = 2302.
    mm = MatMul(psum(128, 512), sbuf(128, 128, "fp32"), sbuf(128, 512, "fp32", offset=512))
    report = run(one("tensor", mm).build(), functional=False).report
    assert report.cores[0].engines["tensor"].cycles == pytest.approx(2048)
    assert report.latency_ns == pytest.approx((128 + 2302) / 2.8)


def test_back_to_back_matmuls_hide_the_stationary_switch():
    # Two matmuls with different stationary tiles: the second LoadStationary (32 cycles) runs
    # during the first matmul's 512-cycle stream, so the second starts at 32 + 512 = 544.
    b = ProgramBuilder("two")
    b.emit("tensor", MatMul(psum(128, 512), sbuf(128, 128, "bf16"), sbuf(128, 512, "bf16", 512)))
    b.emit("tensor", MatMul(psum(128, 512, offset=2048), sbuf(128, 128, "bf16", 256),
                            sbuf(128, 512, "bf16", 512)))
    s = timed(b)
    assert s.start_ns[1] == pytest.approx(544 / 2.8)


def test_short_moving_matmul_issues_every_64_cycles():
    # N = 32 < MM_INIT_LATENCY: the issue interval is 64 cycles; same stationary, no reload.
    b = ProgramBuilder("short")
    stationary = sbuf(128, 128, "bf16")
    for bank in range(3):
        b.emit("tensor", MatMul(psum(128, 32, offset=bank * 2048), stationary,
                                sbuf(128, 32, "bf16", 256)))
    s = timed(b)
    assert np.diff(s.start_ns) == pytest.approx([64 / 2.8, 64 / 2.8])


def test_dma_128x2048_fp32_from_hbm():
    # 1 MiB split over 16 DMA engines, 8 partitions (64 KiB) each.  Each engine: fixed 1300 ns,
    # then 65536 B / 17 B/ns = 3855.06 ns.  HBM serves all 1 MiB in 1048576 / 820 = 1278.75 ns,
    # less than one engine's stream, so it does not bind.  Latency 1300 + 3855.06 = 5155.06 ns.
    b = ProgramBuilder("load")
    b.tensor("x", (128, 2048), "fp32", "input")
    b.emit("dma0", DmaCopy(sbuf(128, 2048, "fp32"), hbm("x", 128, 2048, 2048, "fp32")))
    s = timed(b)
    assert s.latency_ns == pytest.approx(1300 + 65536 / 17)
    assert s.dma_engine_busy_ns == pytest.approx(np.full(16, 65536 / 17))


def test_hbm_bandwidth_binds_when_engines_are_fast():
    # With 1000 B/ns engines the 16 chunks stream in 65.5 ns each, but HBM serves them one
    # after another at 820 B/ns: the last ends at 1300 + 1048576 / 820 = 2578.75 ns.
    fast = dataclasses.replace(SPEC, dma_engine_gbps=1000.0)
    b = ProgramBuilder("load")
    b.tensor("x", (128, 2048), "fp32", "input")
    b.emit("dma0", DmaCopy(sbuf(128, 2048, "fp32"), hbm("x", 128, 2048, 2048, "fp32")))
    s = schedule(b.build(), fast, INFERENTIA2)
    assert s.latency_ns == pytest.approx(1300 + 1048576 / 820)


def test_element_strided_dma_moves_a_burst_per_element():
    # A transposing load: each bf16 element is its own 2-byte run, so every element costs a
    # 64-byte burst.  128 x 128 bf16 = 32 KiB over 16 engines = 2 KiB each, x 64/2 = 64 KiB of
    # bursts at 17 B/ns after the fixed 1300 ns: 1300 + 65536 / 17 = 5155.06 ns.
    b = ProgramBuilder("transposing")
    b.tensor("x", (128, 128), "bf16", "input")
    transposed = dataclasses.replace(hbm("x", 128, 1, 128, "bf16"), axes=((128, 128),))
    b.emit("dma0", DmaCopy(sbuf(128, 128, "bf16"), transposed))
    assert timed(b).latency_ns == pytest.approx(1300 + 65536 / 17)
    # The same bytes row by row: 2 KiB per engine, 1300 + 2048 / 17 ns.
    c = ProgramBuilder("rows")
    c.tensor("x", (128, 128), "bf16", "input")
    c.emit("dma0", DmaCopy(sbuf(128, 128, "bf16"), hbm("x", 128, 128, 128, "bf16")))
    assert timed(c).latency_ns == pytest.approx(1300 + 2048 / 17)


def test_small_transfer_is_overhead_bound():
    # 128 partitions x 64 B: each engine moves 512 B in 30.1 ns after the 1300 ns fixed cost.
    b = ProgramBuilder("small")
    b.tensor("x", (128, 16), "fp32", "input")
    b.emit("dma0", DmaCopy(sbuf(128, 16, "fp32"), hbm("x", 128, 16, 16, "fp32")))
    s = timed(b)
    assert s.latency_ns == pytest.approx(1300 + 512 / 17)
    assert 512 / 17 / s.latency_ns < 0.05  # under 5% of the time moves data


def test_vector_add_fp32_and_bf16():
    # fp32 tensor_tensor on [128, 512]: 2N = 1024 cycles busy, + 60 access overhead = 1084
    # cycles to the result at 1.12 GHz = 967.86 ns.  bf16 runs at N: (512 + 60) / 1.12.
    for dt, cycles in (("fp32", 1024), ("bf16", 512)):
        size = 512 * (4 if dt == "fp32" else 2)
        add = TensorTensor(sbuf(128, 512, dt), sbuf(128, 512, dt, size),
                           sbuf(128, 512, dt, 2 * size), "add")
        s = timed(one("vector", add))
        assert s.latency_ns == pytest.approx((cycles + 60) / 1.12)


def test_vector_minimum_initiation_interval():
    # N = 8 elements: max(MIN_II = 64, 8) = 64 cycles, + 60 overhead = 124 cycles / 1.12 GHz.
    copy = TensorCopy(sbuf(128, 8, "fp32"), sbuf(128, 8, "fp32", 64))
    assert timed(one("vector", copy)).latency_ns == pytest.approx(124 / 1.12)


def test_stride_over_16_bytes_halves_bandwidth():
    # Reading every 8th fp32 (32-byte stride): N = 512 streams at half rate = 1024 cycles.
    strided = dataclasses.replace(sbuf(128, 512, "fp32", 8192), axes=((8, 512),))
    copy = TensorCopy(sbuf(128, 512, "fp32"), strided)
    assert timed(one("vector", copy)).latency_ns == pytest.approx((1024 + 60) / 1.12)


def test_dependent_back_to_back_pays_static_overhead():
    # Second copy reads what the first wrote: it starts at 512 + 100 cycles, not at 512.
    b = ProgramBuilder("dependent")
    b.emit("vector", TensorCopy(sbuf(128, 512, "fp32", 2048), sbuf(128, 512, "fp32")))
    b.emit("vector", TensorCopy(sbuf(128, 512, "fp32", 4096), sbuf(128, 512, "fp32", 2048)))
    b.emit("vector", TensorCopy(sbuf(128, 512, "fp32", 8192), sbuf(128, 512, "fp32")))
    s = timed(b)
    assert s.start_ns[1] == pytest.approx(612 / 1.12)
    assert s.start_ns[2] == pytest.approx(1124 / 1.12)  # independent: right after, no overhead


def test_two_engine_pipeline_with_semaphore():
    # Vector copy: busy 512 cycles, result at 572 cycles / 1.12 = 510.71 ns; signal then.
    # Scalar waits, then exp over 512 elements: (512 + 60) / 1.4 = 408.57 ns.
    b = ProgramBuilder("pipeline")
    b.emit("vector", TensorCopy(sbuf(128, 512, "fp32", 2048), sbuf(128, 512, "fp32")))
    b.sync("vector", "scalar", b.semaphore())
    b.emit("scalar", Activation(sbuf(128, 512, "fp32", 4096), sbuf(128, 512, "fp32", 2048),
                                "exp"))
    s = timed(b)
    assert s.latency_ns == pytest.approx(572 / 1.12 + 572 / 1.4)


def test_vector_and_gpsimd_share_the_sbuf_port():
    # Both engines read SBUF: GpSimd (150 + 512 cycles at 1.4 GHz) starts after Vector's
    # 512-cycle stream leaves the port at 457.14 ns.
    b = ProgramBuilder("ports")
    b.emit("vector", TensorCopy(sbuf(128, 512, "fp32", 2048), sbuf(128, 512, "fp32")))
    b.emit("gpsimd", TensorCopy(sbuf(128, 512, "fp32", 8192), sbuf(128, 512, "fp32", 4096)))
    s = timed(b)
    assert s.start_ns[1] == pytest.approx(512 / 1.12)
    # Scalar has its own SBUF port: it would start at 0.
    c = ProgramBuilder("ports")
    c.emit("vector", TensorCopy(sbuf(128, 512, "fp32", 2048), sbuf(128, 512, "fp32")))
    c.emit("scalar", TensorCopy(sbuf(128, 512, "fp32", 8192), sbuf(128, 512, "fp32", 4096)))
    assert timed(c).start_ns[1] == 0.0


def test_vector_and_scalar_share_the_psum_port():
    b = ProgramBuilder("psum")
    b.emit("vector", TensorCopy(sbuf(128, 512, "fp32"), psum(128, 512)))
    b.emit("scalar", TensorCopy(sbuf(128, 512, "fp32", 2048), psum(128, 512, offset=2048)))
    assert timed(b).start_ns[1] == pytest.approx(512 / 1.12)


def test_wait_that_is_never_signalled_deadlocks():
    b = ProgramBuilder("stuck")
    b.emit("vector", Wait(0, 1))
    with pytest.raises(TimingDeadlock, match=r"vector\[0\] wait sem=0 value=1"):
        timed(b)


def test_delay_must_match_the_program():
    with pytest.raises(ValueError, match="delay_ns must be 1 non-negative values"):
        schedule(one("vector", TensorCopy(sbuf(128, 8, "fp32"), sbuf(128, 8, "fp32", 64))).build(),
                 SPEC, delay_ns=np.zeros(3))


# ---- whole programs ------------------------------------------------------------------------
def test_large_matmul_is_tensor_bound_within_ten_percent():
    # 4096 x 2048 x 1024 bf16: enough reuse that TensorE, not DMA, sets the pace.
    program = tiled_matmul(4096, 2048, 1024, "bf16")
    report = run(program, functional=False).report
    ideal = 2 * 4096 * 2048 * 1024 / SPEC.tensor_peak_flops * 1e9
    assert ideal <= report.latency_ns <= 1.10 * ideal
    assert report.tensor_hfu > 0.9


def test_streaming_copy_is_dma_bound():
    # HBM -> SBUF -> HBM of 8 tiles of 128 x 4096 fp32 (2 MiB each way).  Each transfer moves
    # 2 MiB over 16 engines at 17 B/ns: 16 transfers x 131072 B per engine / 17 = total data
    # time per engine; the run cannot be faster than 4 MiB / (16 * 17 B/ns).
    b = ProgramBuilder("stream")
    b.tensor("x", (1024, 4096), "fp32", "input")
    b.tensor("y", (1024, 4096), "fp32", "output")
    for t in range(8):
        tile = sbuf(128, 4096, "fp32", offset=(t % 2) * 16384)
        rows = hbm("x", 128, 4096, 4096, "fp32", offset=t * 128 * 4096 * 4)
        if t >= 2:  # double buffering: reload a buffer only once its store has read it
            b.emit("dma0", Wait(1, t - 1))
        b.emit("dma0", DmaCopy(tile, rows))
        b.sync("dma0", "dma1", 0)
        b.emit("dma1", DmaCopy(hbm("y", 128, 4096, 4096, "fp32", offset=t * 128 * 4096 * 4),
                               tile))
        b.signal("dma1", 1)
    program = b.build()
    bound = 2 * 8 * 128 * 4096 * 4 / (16 * 17.0)
    report = run(program, functional=False).report
    assert bound <= report.latency_ns <= 1.5 * bound
    assert report.cores[0].engines["dma"].utilization > 0.9


# ---- properties -----------------------------------------------------------------------------
SMALL = tiled_matmul(256, 256, 1024, "bf16")
SMALL_INPUTS = tiled_matmul_inputs(SMALL, seed=3)
SMALL_OUTPUT = run(SMALL, SMALL_INPUTS).outputs["result"]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_random_delays_never_change_results(seed):
    rng = np.random.default_rng(seed)
    delays = rng.exponential(200.0, SMALL.instruction_count) * (rng.random(
        SMALL.instruction_count) < 0.3)
    result = run(SMALL, SMALL_INPUTS, delay_ns=delays)
    assert np.array_equal(result.outputs["result"], SMALL_OUTPUT)
    assert result.report.latency_ns >= run(SMALL, functional=False).report.latency_ns - 1e-6


def test_timing_is_deterministic():
    first, second = schedule(SMALL, SPEC), schedule(SMALL, SPEC)
    assert np.array_equal(first.start_ns, second.start_ns)
    assert np.array_equal(first.end_ns, second.end_ns)
    assert np.array_equal(first.order, second.order)


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([(128, 128, 512), (256, 128, 1024), (128, 384, 512), (384, 256, 512)]),
       st.sampled_from(["bf16", "fp32"]), st.integers(1, 4))
def test_utilisation_bounded_and_bytes_match_instructions(shape, dt, buffers):
    program = tiled_matmul(*shape, dt, buffers=buffers)
    report = run(program, functional=False).report
    for engine in report.cores[0].engines.values():
        assert 0.0 <= engine.utilization <= 1.0 + 1e-12
        assert engine.busy_ns <= report.latency_ns + 1e-9
    # Bytes implied by the instructions, counted independently of the report's helper.
    m, k, n = shape
    size = 2 if dt == "bf16" else 4
    memory = report.cores[0].memory
    assert memory["hbm_read_bytes"] == (k * m + k * n) * size
    assert memory["hbm_write_bytes"] == m * n * 4
    assert memory["dma_bytes"] == (k * m + k * n) * size + m * n * 4
    assert memory == memory_traffic(encode(program, NEURONCORE_V2))
    assert report.flops == 2 * m * k * n + m * n  # matmuls + the PSUM drain copies
