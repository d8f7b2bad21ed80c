"""The tracer's schemes, checked on the programs it produces: semaphores (one signalling stream
each, no redundant waits), engine and DMA-queue assignment, PSUM accumulation flags, on-chip
allocation and re-use, HBM tensor kinds, SPMD instances, and race freedom."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.kernel_runner import simulate, trace
from emulator.races import check_races
from emulator.runner import run
from isa import INF2, MatMul, Program, Signal, Space, Wait, psum
from kernels.nki import isa as nisa
from kernels.nki import jit
from kernels.nki import language as nl
from kernels.trace import Allocator, TensorSpec, trace_kernel
from kernels.trace.accumulation import AccumulationGroups
from kernels.trace.allocator import ALIGNMENT
from kernels.trace.hazards import AccessLog, Region

from .test_kernels import tensor_add, tiled_matmul, transpose_blocks

RNG = np.random.default_rng(11)


def waits(program: Program, stream: str) -> list[Wait]:
    return [i for i in program.stream(stream).instructions if isinstance(i, Wait)]


def real(program: Program, stream: str) -> list:
    return [i for i in program.stream(stream).instructions if not isinstance(i, (Wait, Signal))]


# ---- semaphores --------------------------------------------------------------------------------
@jit
def load_twice_then_store(x):
    """A load, two Vector instructions reading it, a store of their result."""
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    t = nl.load(x)
    doubled = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=doubled, data=t, op0=nl.multiply, operand0=2.0)
    nisa.tensor_tensor(dst=doubled, data1=doubled, data2=t, op=nl.add)
    nl.store(out, doubled)
    return out


def test_each_semaphore_has_one_signalling_stream_and_waits_are_not_redundant():
    program = trace(load_twice_then_store, (64, 32))
    signallers = {}
    for stream in program.streams:
        for instr in stream.instructions:
            if isinstance(instr, Signal):
                assert signallers.setdefault(instr.sem, stream.name) == stream.name
    # The Vector engine waits once for the load although two instructions read it; the store
    # waits only for the Vector engine, which already waited for the load (transitively).
    assert len(waits(program, "vector")) == 1
    assert len(waits(program, "dma1")) == 1
    store_wait = waits(program, "dma1")[0]
    assert signallers[store_wait.sem] == "vector"
    check_races(program)


def test_results_do_not_depend_on_the_interleaving_of_streams():
    x = RNG.standard_normal((64, 32)).astype(np.float32)
    program = trace(load_twice_then_store, x)
    for seed in range(5):
        result = run(program, {"x": x}, timing=False, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(result.outputs["out"], 3 * x)


def test_reused_memory_waits_for_the_earlier_reader():
    """A tile freed and re-allocated at the same address: the new writer waits for the old
    reader (WAR), found by address."""

    @jit
    def reuse(x):
        out = nl.ndarray((2, 128, 64), dtype=x.dtype, buffer=nl.shared_hbm)
        for i in range(2):
            t = nl.ndarray((128, 64), dtype=x.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=t, src=x)
            u = nl.ndarray((128, 64), dtype=x.dtype, buffer=nl.sbuf)
            nisa.activation(dst=u, op=nl.exp, data=t)
            nisa.dma_copy(dst=out[i], src=u)
            del t, u
        return out

    x = RNG.standard_normal((128, 64)).astype(np.float32)
    program = trace(reuse, x)
    loads = [i for s in program.streams for i in s.instructions
             if getattr(i, "opcode", "") == "dma_copy" and i.dst.space.value == "sbuf"]
    assert loads[0].dst == loads[1].dst  # the second load re-uses the first tile's bytes
    second_load = program.stream("dma2")
    assert isinstance(second_load.instructions[0], Wait)  # ... after the exp that read them
    check_races(program)
    np.testing.assert_allclose(simulate(reuse)(x), np.stack([np.exp(x)] * 2), rtol=1e-6)


def test_semaphores_fit_the_target():
    program = trace(transpose_blocks, (256, 384))
    signalled = {i.sem for s in program.streams for i in s.instructions if isinstance(i, Signal)}
    assert len(signalled) <= 32
    program.validate(INF2)
    check_races(program)


# ---- engines and queues ------------------------------------------------------------------------
@jit
def one_of_each(x):
    """Instructions of every engine; DMAs spread round robin over the queues."""
    out = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.shared_hbm)
    t = nl.load(x)
    ramp = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.sbuf)
    nisa.iota(dst=ramp, pattern=[[1, 64]], offset=0, channel_multiplier=64)
    lower = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.sbuf)
    nisa.affine_select(dst=lower, pattern=[[-1, 64]], channel_multiplier=1, on_true_tile=t,
                       on_false_value=-1.0, cmp_op=nl.greater_equal)
    e = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.sbuf)
    nisa.activation(dst=e, op=nl.tanh, data=lower, scale=0.5)
    copy = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_copy(dst=copy, src=e, engine=nisa.engine.gpsimd)
    t_psum = nl.ndarray((64, 128), dtype=nl.float32, buffer=nl.psum)
    nisa.nc_transpose(dst=t_psum, data=copy)
    back = nl.ndarray((64, 128), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_copy(dst=back, src=t_psum)
    result = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=result, data1=copy, data2=ramp, op=nl.add)
    nl.store(out, result)
    spare = nl.ndarray((64, 128), dtype=nl.float32, buffer=nl.shared_hbm)
    nl.store(spare, back)
    return out


def test_engines_run_their_opcodes():
    x = RNG.standard_normal((128, 64)).astype(np.float32)
    program = trace(one_of_each, x)
    opcodes = {s.name: [i.opcode for i in real(program, s.name)] for s in program.streams}
    assert opcodes["gpsimd"] == ["iota", "affine_select", "tensor_copy"]
    assert opcodes["scalar"] == ["activation"]
    assert opcodes["tensor"] == ["transpose"]
    assert opcodes["vector"] == ["tensor_copy", "tensor_tensor"]
    assert [s.name for s in program.streams if s.name.startswith("dma")] == ["dma0", "dma1",
                                                                             "dma2"]
    kinds = {t.name: t.kind for t in program.tensors}
    assert kinds == {"x": "input", "out": "output", "spare": "scratch"}
    check_races(program)
    out = simulate(one_of_each)(x)
    p, i = np.indices((128, 64))
    lower = np.where(p - i >= 0, x, -1.0)
    np.testing.assert_allclose(out, np.tanh(0.5 * lower) + (64 * p + i), rtol=1e-6)


def test_dma_queues_are_used_round_robin():
    @jit
    def many_loads(x):
        tiles = [nl.load(x[i:i + 1, :]) for i in range(20)]
        assert len(tiles) == 20

    program = trace(many_loads, (20, 8))
    counts = Counter(s.name for s in program.streams for i in s.instructions
                     if i.opcode == "dma_copy")
    assert counts == Counter({f"dma{q}": 2 if q < 4 else 1 for q in range(16)})


# ---- PSUM accumulation -------------------------------------------------------------------------
def test_first_matmul_of_each_group_overwrites_and_the_rest_accumulate():
    program = trace(tiled_matmul, (384, 256), (384, 1024))
    flags = [i.accumulate for i in program.stream("tensor").instructions
             if isinstance(i, MatMul)]
    assert flags == [False, True, True] * 4
    check_races(program)


def test_a_psum_tile_reused_after_eviction_starts_a_new_group():
    @jit
    def two_products(a, b):
        out = nl.ndarray((2, 128, 128), dtype=nl.float32, buffer=nl.shared_hbm)
        a_t, b_t = nl.load(a), nl.load(b)
        acc = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.psum)
        for i, moving in enumerate((a_t, b_t)):
            nisa.nc_matmul(dst=acc, stationary=a_t, moving=moving)
            nisa.nc_matmul(dst=acc, stationary=b_t, moving=moving)
            res = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.sbuf)
            nisa.tensor_copy(dst=res, src=acc)  # evicting the group ends it
            nisa.dma_copy(dst=out[i], src=res)
        return out

    a = RNG.standard_normal((128, 128)).astype(np.float32)
    b = RNG.standard_normal((128, 128)).astype(np.float32)
    program = trace(two_products, a, b)
    flags = [i.accumulate for i in program.stream("tensor").instructions
             if isinstance(i, MatMul)]
    assert flags == [False, True, False, True]
    out = simulate(two_products, check_races=True)(a, b)
    np.testing.assert_allclose(out[0], a.T @ a + b.T @ a, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out[1], a.T @ b + b.T @ b, rtol=1e-4, atol=1e-3)


def test_zero_memset_then_matmul_overwrites():
    groups = AccumulationGroups()
    bank = psum(128, 512)
    groups.other_access(Region.of(bank), write=True, writer=None)  # nl.zeros on PSUM
    assert groups.matmul(bank, None, "nc_matmul") is False
    assert groups.matmul(bank, None, "nc_matmul") is True


# ---- allocation --------------------------------------------------------------------------------
def test_psum_tiles_do_not_straddle_banks():
    allocator = Allocator(Space.PSUM, INF2)
    first = allocator.allocate(128, 1536, "a")
    second = allocator.allocate(128, 1024, "b")  # would cross 2048 right after `a`
    assert (first.offset, second.offset) == (0, 2048)
    third = allocator.allocate(128, 512, "c")  # fits the gap left in bank 0
    assert third.offset == 1536


def test_allocator_first_fit_and_alignment():
    allocator = Allocator(Space.SBUF, INF2)
    a = allocator.allocate(128, 6, "a")
    b = allocator.allocate(64, 100, "b")
    assert (a.offset, b.offset) == (0, 8) and a.nbytes % ALIGNMENT == 0
    allocator.free(a)
    c = allocator.allocate(32, 4, "c")
    assert c.offset == 0
    with pytest.raises(ValueError, match="not allocated"):
        allocator.free(a)


# ---- hazards -----------------------------------------------------------------------------------
def test_access_log_conflicts_and_pruning():
    log = AccessLog()
    box = Region(("sbuf", ""), 0, 128, 0, 512)
    half = Region(("sbuf", ""), 0, 64, 0, 256)
    log.record("dma0", 0, 0, [], [half])
    log.record("vector", 0, 1, [half], [])
    assert log.conflicts("scalar", [half], []) == [("dma0", 0)]  # RAW only
    assert log.conflicts("scalar", [], [half]) == [("vector", 0), ("dma0", 0)]  # WAR, WAW
    log.record("scalar", 3, 2, [], [box])  # a covering write dominates both
    assert len(log) == 1
    assert log.conflicts("gpsimd", [half], []) == [("scalar", 3)]
    other = Region(("hbm", "x"), 0, 1, 0, 512)
    assert log.conflicts("gpsimd", [], [other]) == []


# ---- SPMD and the interface --------------------------------------------------------------------
def test_spmd_traces_one_program_per_instance():
    traced = trace_kernel(tensor_add[2, 3], (TensorSpec((256, 1536)), TensorSpec((256, 1536))))
    assert [p.name for p in traced.programs] == [
        f"tensor_add[{i},{j}]" for i in range(2) for j in range(3)]
    assert traced.inputs == ("a_input", "b_input") and traced.outputs == ("c_output",)
    assert (traced.sbuf_peak_bytes, traced.psum_peak_bytes) == (3 * 512 * 4, 0)
    for program in traced.programs:
        check_races(program)


def test_program_ids_outside_the_grid_fail():
    @jit
    def third_axis(x):
        nl.program_id(2)

    with pytest.raises(Exception, match=r"program axis 2 does not exist in the launch grid"):
        trace(third_axis[2, 2], (4, 4))
    # without a grid a kernel is program 0 of 1
    @jit
    def solo(x):
        assert nl.program_id(0) == 0 and nl.num_programs(0) == 1

    trace(solo, (4, 4))


def test_views_lower_to_access_patterns():
    @jit
    def views(x):
        t = nl.ndarray((128, 4, 64), dtype=nl.bfloat16, buffer=nl.sbuf)
        nisa.dma_copy(dst=t[0:32, 1, ::2], src=x[nl.ds(32, 32), 3, 0:32])
        nisa.dma_copy(dst=t[32:64, :, 63], src=x[0:32, 4:8, 7])

    program = trace(views, TensorSpec((128, 8, 64), nl.bfloat16))
    first, second = [i for s in program.streams for i in s.instructions]
    assert str(first.dst) == "sbuf[0:32]+128[[2,32]]:bf16"
    assert str(first.src) == "hbm:x[32x512]+33152[[1,32]]:bf16"
    assert str(second.dst) == "sbuf[32:64]+126[[64,4]]:bf16"
    assert str(second.src) == "hbm:x[32x512]+526[[64,4]]:bf16"


class _ReferenceLog:
    """The access log's rules written plainly: one list per memory and kind, scanned whole."""

    def __init__(self) -> None:
        self.writes: dict = {}
        self.reads: dict = {}

    def conflicts(self, stream, reads, writes):
        needed = {}
        searches = [(self.writes, r) for r in reads]
        searches += [(log, r) for r in writes for log in (self.writes, self.reads)]
        for log, region in searches:
            for other, index, sequence, box in log.get(region.memory, []):
                if other != stream and box.overlaps(region):
                    if other not in needed or index > needed[other][0]:
                        needed[other] = (index, sequence)
        return [(s, i) for s, (i, _) in sorted(needed.items(), key=lambda kv: -kv[1][1])]

    def record(self, stream, index, sequence, reads, writes):
        for region in writes:
            for log in (self.writes, self.reads):
                log[region.memory] = [e for e in log.get(region.memory, [])
                                      if not region.contains(e[3])]
            self.writes[region.memory].append((stream, index, sequence, region))
        for region in reads:
            if any(w.contains(region) for w in writes):
                continue
            self.reads[region.memory] = [e for e in self.reads.get(region.memory, [])
                                         if not (e[0] == stream and region.contains(e[3]))]
            self.reads[region.memory].append((stream, index, sequence, region))


# Byte ranges from a few bytes to far more than the log's wide threshold (64 blocks of 4 KiB).
_regions = st.builds(
    lambda memory, p, dp, b, db: Region(memory, p, p + dp, b, b + db),
    st.sampled_from([("sbuf", ""), ("psum", ""), ("hbm", "x")]), st.integers(0, 6),
    st.integers(1, 4), st.integers(0, 40_000), st.sampled_from([1, 64, 4096, 9000, 300_000]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["dma0", "vector", "scalar", "tensor"]),
                          st.lists(_regions, max_size=2), st.lists(_regions, max_size=2)),
                min_size=1, max_size=40))
def test_access_log_agrees_with_a_plain_scan_of_every_entry(steps):
    # Random instructions on four streams: the block-filed log finds the same conflicts and
    # keeps the same entries as scanning every entry.
    log, reference = AccessLog(), _ReferenceLog()
    indices: dict[str, int] = {}
    for sequence, (stream, reads, writes) in enumerate(steps):
        assert log.conflicts(stream, reads, writes) == reference.conflicts(stream, reads, writes)
        index = indices[stream] = indices.get(stream, -1) + 1
        log.record(stream, index, sequence, reads, writes)
        reference.record(stream, index, sequence, reads, writes)
        assert len(log) == sum(len(v) for d in (reference.writes, reference.reads)
                               for v in d.values())
