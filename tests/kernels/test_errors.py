"""Kernels that break a hardware limit or use an unsupported construct fail while tracing, with
a message naming the tensor or construct, the limit, and the kernel's own file:line."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.kernel_runner import simulate, trace
from kernels.nki import (
    AllocationError,
    NkiValidationError,
    TileIndexError,
    TracingError,
    UnsupportedConstructError,
    jit,
)
from kernels.nki import isa as nisa
from kernels.nki import language as nl

HERE = r"test_errors\.py:\d+"


def test_sbuf_over_allocation_names_the_tile_and_the_capacity():
    @jit
    def too_big(x):
        big_tile = nl.ndarray((128, 50_000), dtype=nl.float32, buffer=nl.sbuf)
        nisa.memset(dst=big_tile, value=0.0)

    with pytest.raises(AllocationError,
                       match=rf"sbuf allocation of big_tile \(128, 50000\) fp32 needs 200000 "
                             rf"bytes per partition; sbuf has 196608 .* \(at {HERE} in too_big\)"):
        trace(too_big, (4, 4))


def test_sbuf_fills_up_when_live_tiles_exceed_it():
    @jit
    def hoards(x):
        kept = []
        for _ in range(13):  # 13 x 16 KiB live at once > 192 KiB
            kept.append(nl.ndarray((128, 4096), dtype=nl.float32, buffer=nl.sbuf))

    with pytest.raises(AllocationError, match=r"12 live tiles"):
        trace(hoards, (4, 4))


def test_freed_tiles_are_reused():
    @jit
    def churns(x):
        out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        for _ in range(16):  # 16 x 32 KiB in sequence, only two live at a time, > 192 KiB
            tile = nl.ndarray((128, 8192), dtype=nl.float32, buffer=nl.sbuf)
            nisa.memset(dst=tile, value=1.0)
        nisa.dma_copy(dst=out, src=tile[:, 0:4])
        return out

    np.testing.assert_array_equal(simulate(churns, check_races=True)(np.zeros((128, 4))), 1.0)


def test_psum_tile_larger_than_a_bank():
    @jit
    def wide_psum(x):
        acc = nl.ndarray((128, 1024), dtype=nl.float32, buffer=nl.psum)
        nisa.memset(dst=acc, value=0.0)

    with pytest.raises(AllocationError,
                       match=rf"psum tile acc \(128, 1024\) fp32 needs 4096 bytes per partition; "
                             rf"a PSUM tile must fit one 2048-byte bank .*{HERE}"):
        trace(wide_psum, (4, 4))


def test_psum_holds_eight_banks():
    @jit
    def nine_banks(x):
        banks = [nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum) for _ in range(9)]
        nisa.memset(dst=banks[0], value=0.0)

    with pytest.raises(AllocationError, match=r"psum .* 16384 bytes per partition"):
        trace(nine_banks, (4, 4))


def test_partition_dimension_over_128():
    @jit
    def tall(x):
        t = nl.ndarray((256, 4), dtype=nl.float32, buffer=nl.sbuf)
        nisa.memset(dst=t, value=0.0)

    with pytest.raises(NkiValidationError,
                       match=rf"tensor t \(256, 4\) fp32: partition dimension 256 must be "
                             rf"1\.\.128 \(nl\.tile_size\.pmax\) .*{HERE}"):
        trace(tall, (4, 4))


def test_matmul_moving_free_size_over_512():
    @jit
    def wide_matmul(a, b):
        stationary = nl.ndarray((128, 128), dtype=nl.bfloat16, buffer=nl.sbuf)
        moving = nl.ndarray((128, 1024), dtype=nl.bfloat16, buffer=nl.sbuf)
        res = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum)
        nisa.nc_matmul(dst=res, stationary=stationary, moving=moving)

    with pytest.raises(NkiValidationError,
                       match=rf"nisa\.nc_matmul: moving free size N = 1024 exceeds "
                             rf"nl\.tile_size\.gemm_moving_fmax = 512 .*{HERE} in wide_matmul"):
        trace(wide_matmul, (4, 4), (4, 4))


def test_unsupported_op_value_names_the_op_and_the_line():
    @jit
    def arctan_kernel(x):
        a = nl.ndarray((4, 4), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=a, data1=a, data2=a, op=np.arctan2)

    with pytest.raises(UnsupportedConstructError,
                       match=rf"nisa\.tensor_tensor: op value numpy\.arctan2 is not supported as "
                             rf"an ALU operator; supported: nl\.add, .*{HERE} in arctan_kernel"):
        trace(arctan_kernel, (4, 4))


def test_activation_op_used_as_an_alu_op():
    @jit
    def exp_as_alu(x):
        a = nl.ndarray((4, 4), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=a, data=a, op0=nl.exp, operand0=1.0)

    with pytest.raises(UnsupportedConstructError, match=r"op value nl\.exp .* ALU operator"):
        trace(exp_as_alu, (4, 4))


def test_unknown_language_names_fail_with_the_construct():
    @jit
    def gathers(x):
        nl.gather_flattened(nl.load(x), nl.load(x))

    with pytest.raises(UnsupportedConstructError,
                       match=rf"nl\.gather_flattened is not supported .*{HERE} in gathers"):
        trace(gathers, (4, 4))


def test_partition_reduction_is_unsupported():
    @jit
    def column_sums(x):
        t = nl.load(x)
        nl.store(x[0:1, :], nl.sum(t, axis=0))

    with pytest.raises(UnsupportedConstructError, match=r"nl\.sum: reduction over the partition"):
        trace(column_sums, (8, 8))


def test_index_out_of_range():
    @jit
    def overrun(x):
        t = nl.ndarray((64, 32), dtype=nl.float32, buffer=nl.sbuf)
        nisa.dma_copy(dst=t, src=x[0:64, 0:40])

    with pytest.raises(TileIndexError,
                       match=rf"tensor x: slice 0:40 is out of range for dimension 1 of size "
                             rf"32 .*{HERE}"):
        trace(overrun, (64, 32))


def test_integer_index_on_the_partition_axis():
    @jit
    def drops_partitions(x):
        t = nl.load(x)
        nisa.memset(dst=t[3], value=0.0)

    with pytest.raises(TileIndexError, match=r"partition axis .* slice i:i\+1"):
        trace(drops_partitions, (8, 8))


def test_too_many_free_axes():
    @jit
    def six_dims(x):
        t = nl.ndarray((2, 64), dtype=nl.float32, buffer=nl.sbuf)
        view = t.ap([[64, 2], [32, 2], [2, 2], [16, 2], [1, 2], [4, 2]])
        nisa.memset(dst=view, value=0.0)

    with pytest.raises(NkiValidationError,
                       match=r"tensor t: .* needs 5 free axes; the hardware access pattern has "
                             r"at most 4"):
        trace(six_dims, (4, 4))


def test_strided_partitions_in_an_access_pattern():
    @jit
    def every_other_partition(x):
        t = nl.ndarray((16, 32), dtype=nl.float32, buffer=nl.sbuf)
        t.ap(pattern=[[64, 8], [1, 32]], offset=0)

    with pytest.raises(NkiValidationError, match=r"partition step 64 must be the 32 elements"):
        trace(every_other_partition, (4, 4))


def test_engine_that_cannot_run_the_opcode():
    @jit
    def scan_on_scalar(x):
        t = nl.ndarray((8, 8), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=t, data1=t, data2=t, op=nl.add, engine=nisa.engine.scalar)

    with pytest.raises(NkiValidationError,
                       match=r"runs on the vector or gpsimd engine, not scalar"):
        trace(scan_on_scalar, (4, 4))


def test_gpsimd_cannot_write_psum():
    @jit
    def gpsimd_psum(x):
        t = nl.ndarray((8, 8), dtype=nl.float32, buffer=nl.psum)
        nisa.memset(dst=t, value=0.0, engine=nisa.engine.gpsimd)

    with pytest.raises(NkiValidationError, match=r"nisa\.memset: .*gpsimd cannot use psum"):
        trace(gpsimd_psum, (4, 4))


def test_matmul_onto_data_written_by_another_engine_is_refused():
    @jit
    def bias_preload(x):
        a = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.sbuf)
        nisa.memset(dst=a, value=1.0)
        acc = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.psum)
        nisa.memset(dst=acc, value=2.0)
        nisa.nc_matmul(dst=acc, stationary=a, moving=a)

    with pytest.raises(UnsupportedConstructError,
                       match=r"nisa\.nc_matmul: nc_matmul into psum.* written by nisa\.memset"):
        trace(bias_preload, (4, 4))


def test_explicit_accumulate_without_an_open_group():
    @jit
    def accumulate_first(x):
        a = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.sbuf)
        acc = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.psum)
        nisa.nc_matmul(dst=acc, stationary=a, moving=a, accumulate=True)

    with pytest.raises(NkiValidationError, match=r"accumulate=True .* no accumulation group"):
        trace(accumulate_first, (4, 4))


def test_reading_then_writing_a_parameter_is_refused():
    @jit
    def in_place(x):
        t = nl.load(x)
        nl.store(x, t)

    with pytest.raises(UnsupportedConstructError, match=r"writes kernel parameter x after"):
        trace(in_place, (4, 4))


def test_language_calls_outside_a_trace_fail():
    with pytest.raises(TracingError, match=r"outside a traced kernel"):
        nl.ndarray((4, 4), dtype=nl.float32)


def test_calling_a_kernel_directly_points_to_the_runner():
    @jit
    def noop(x):
        pass

    with pytest.raises(TracingError, match=r"simulate\(noop\)"):
        noop(np.zeros(4))
    with pytest.raises(TracingError, match=r"noop\[2, 2\] called directly"):
        noop[2, 2](np.zeros(4))


def test_access_pattern_beyond_a_partition():
    @jit
    def overreach(x):
        t = nl.ndarray((16, 32), dtype=nl.float32, buffer=nl.sbuf)
        nisa.memset(dst=t.ap(pattern=[[32, 16], [1, 32]], offset=8), value=0.0)

    with pytest.raises(TileIndexError,
                       match=rf"tensor t: elements 8\.\.39 of a partition are outside its 32 "
                             rf"elements .*{HERE} in overreach"):
        trace(overreach, (4, 4))
