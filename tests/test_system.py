"""Many cores: NeuronLink topologies, ring collectives (values and time), shared HBM, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.interconnect import Topology
from emulator.machine import INSTANCES
from emulator.system import CollectiveError, run_system
from isa import DmaCopy, ProgramBuilder, hbm, sbuf
from isa.instructions import AllGather, AllReduce, Recv, ReduceScatter, Send, Wait
from kernels.programs import tiled_matmul

ROW = 256  # elements per row of the test vectors


def collective_program(kind, rank, ranks, rows, out_rows=None, name="c"):
    """One collective from HBM tensor x (rows x ROW fp32) into y (out_rows x ROW)."""
    out_rows = rows if out_rows is None else out_rows
    b = ProgramBuilder(f"{name}{rank}")
    b.tensor("x", (rows, ROW), "fp32", "input")
    b.tensor("y", (out_rows, ROW), "fp32", "output")
    dst, src = hbm("y", out_rows, ROW, ROW, "fp32"), hbm("x", rows, ROW, ROW, "fp32")
    b.emit("dma0", kind(dst, src, tuple(ranks)))
    return b.build()


def vectors(count, rows, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((rows, ROW)).astype(np.float32) for _ in range(count)]


def ring_time(instance, n, nbytes):
    return (2 * (n - 1) / n * nbytes / instance.link_gbps
            + 2 * (n - 1) * instance.link_latency_ns)


@pytest.mark.parametrize("name, chips", [("inf2.24xlarge", 6), ("inf2.48xlarge", 12)])
def test_ring_all_reduce_time_and_values(name, chips):
    instance = INSTANCES[name]
    ranks = [c * instance.chip.cores for c in range(chips)]  # one core on every chip
    rows = 96  # 96 x 256 fp32 = 96 KiB, divisible by 6 and 12 chunks
    xs = vectors(chips, rows)
    result = run_system([collective_program(AllReduce, r, ranks, rows) for r in ranks],
                        [{"x": x} for x in xs], instance, ranks=ranks)
    expected = ring_time(instance, chips, rows * ROW * 4)
    assert result.report.latency_ns == pytest.approx(expected, rel=0.05)
    total = np.sum(xs, axis=0, dtype=np.float64)
    for r in ranks:
        np.testing.assert_allclose(result.outputs[r]["y"], total, rtol=1e-5, atol=1e-5)
    # 2(n-1) steps of S/n bytes on every link of the ring, one direction.
    assert len(result.report.links) == chips
    for nbytes in result.report.links.values():
        assert nbytes == pytest.approx(2 * (chips - 1) * rows * ROW * 4 / chips)


def test_all_gather_and_reduce_scatter_values_and_time():
    instance = INSTANCES["inf2.48xlarge"]
    ranks = [c * 2 for c in range(12)]
    rows = 12
    xs = vectors(12, rows, seed=1)
    gathered = run_system(
        [collective_program(AllGather, r, ranks, rows, rows * 12, "g") for r in ranks],
        [{"x": x} for x in xs], instance, ranks=ranks)
    for r in ranks:
        np.testing.assert_array_equal(gathered.outputs[r]["y"], np.concatenate(xs))
    # (n-1) steps of one block each: (n-1) * (lat + S_block / bw), S_block = src size.
    block = rows * ROW * 4
    assert gathered.report.latency_ns == pytest.approx(
        11 * (instance.link_latency_ns + block / instance.link_gbps))
    scattered = run_system(
        [collective_program(ReduceScatter, r, ranks, rows, rows // 12, "s") for r in ranks],
        [{"x": x} for x in xs], instance, ranks=ranks)
    total = np.sum(xs, axis=0, dtype=np.float64).reshape(12, -1)
    for i, r in enumerate(ranks):
        np.testing.assert_allclose(scattered.outputs[r]["y"].reshape(-1), total[i],
                                   rtol=1e-5, atol=1e-5)
    # (n-1) steps of S/n bytes, S = the src size: (n-1) * (lat + S / n / bw).
    chunk = rows * ROW * 4 / 12
    assert scattered.report.latency_ns == pytest.approx(
        11 * (instance.link_latency_ns + chunk / instance.link_gbps), rel=0.05)


def test_all_reduce_cost_grows_with_chips_on_a_chain():
    # inf1.24xlarge is a chain: the ring's way back crosses every link again (n-1 hops).
    instance = INSTANCES["inf1.24xlarge"]
    times = []
    for chips in (2, 4, 8):
        ranks = [c * 4 for c in range(chips)]
        result = run_system([collective_program(AllReduce, r, ranks, 8) for r in ranks],
                            [{"x": x} for x in vectors(chips, 8)], instance, ranks=ranks,
                            functional=False)
        times.append(result.report.latency_ns)
        chunk = 8 * ROW * 4 / chips
        step = (chips - 1) * instance.link_latency_ns + chunk / instance.link_gbps
        assert result.report.latency_ns == pytest.approx(2 * (chips - 1) * step)
    assert times[0] < times[1] < times[2]


def test_torus_ring_uses_neighbour_links():
    topology = Topology(INSTANCES["trn1.32xlarge"])
    ring = topology.chip_ring
    assert sorted(ring) == list(range(16))
    hops = [len(topology.route(a, b)) for a, b in zip(ring, ring[1:] + ring[:1])]
    assert max(hops) == 1  # boustrophedon order plus the torus wrap: every step one hop


def test_send_recv_moves_data_between_chips():
    instance = INSTANCES["inf2.48xlarge"]
    sender, receiver = ProgramBuilder("send"), ProgramBuilder("recv")
    sender.tensor("x", (4, ROW), "fp32", "input")
    receiver.tensor("y", (4, ROW), "fp32", "output")
    sender.emit("dma0", Send(hbm("x", 4, ROW, ROW, "fp32"), peer=6, tag=7))
    receiver.emit("dma0", Recv(hbm("y", 4, ROW, ROW, "fp32"), peer=0, tag=7))
    x = vectors(1, 4)[0]
    result = run_system([sender.build(), receiver.build()], [{"x": x}, {}], instance,
                        ranks=[0, 6])  # chip 0 -> chip 3: three hops around the ring
    np.testing.assert_array_equal(result.outputs[6]["y"], x)
    assert result.report.latency_ns == pytest.approx(
        3 * instance.link_latency_ns + 4 * ROW * 4 / instance.link_gbps)


def test_cores_of_a_chip_share_its_hbm_bandwidth():
    # Two cores streaming HBM -> SBUF at once: with HBM cut to 100 B/ns the pair takes about
    # twice as long as one core alone.
    from emulator.machine_file import load_machine_text
    slow = load_machine_text('base = "inf2"\n[chip]\nhbm_gbps = 100.0\n')

    def loader(name):
        b = ProgramBuilder(name)
        b.tensor("x", (128, 4096), "fp32", "input")
        for t in range(4):
            b.emit(f"dma{t}", DmaCopy(sbuf(128, 4096, "fp32", 16384 * t),
                                      hbm("x", 128, 4096, 4096, "fp32")))
        return b.build()

    alone = run_system([loader("a")], None, slow, functional=False).report.latency_ns
    pair = run_system([loader("a"), loader("b")], None, slow, ranks=[0, 1],
                      functional=False).report.latency_ns
    assert pair == pytest.approx(2 * alone, rel=0.1)


@settings(max_examples=10, deadline=None)
@given(st.integers(2, 12), st.integers(1, 4))
def test_all_reduce_equals_numpy_sum(chips, rows_per_chip):
    instance = INSTANCES["inf2.48xlarge"]
    ranks = list(range(0, 2 * chips, 2))
    rows = rows_per_chip * chips
    xs = vectors(chips, rows, seed=chips)
    result = run_system([collective_program(AllReduce, r, ranks, rows) for r in ranks],
                        [{"x": x} for x in xs], instance, ranks=ranks)
    for r in ranks:
        np.testing.assert_allclose(result.outputs[r]["y"], np.sum(xs, axis=0, dtype=np.float64),
                                   rtol=1e-5, atol=1e-5)


def test_programs_without_collectives_run_side_by_side():
    program = tiled_matmul(128, 128, 512, "fp32")
    rng = np.random.default_rng(2)
    inputs = {"lhsT": rng.standard_normal((128, 128)), "rhs": rng.standard_normal((128, 512))}
    result = run_system([program, program], [inputs, inputs], "inf2.xlarge")
    np.testing.assert_array_equal(result.outputs[0]["result"], result.outputs[1]["result"])
    assert len(result.report.cores) == 2 and result.report.chips[0]["cores"] == [0, 1]


def test_unmatched_collective_is_an_error():
    ranks = [0, 2]
    lonely = collective_program(AllReduce, 0, ranks, 2)
    with pytest.raises(CollectiveError, match=r"no matching instruction on core\(s\) \[2\]"):
        run_system([lonely, tiled_matmul(128, 128, 512)], None, "inf2.48xlarge", ranks=ranks,
                   functional=False)


def test_core_outside_its_collective_is_an_error():
    program = collective_program(AllReduce, 0, [2, 4], 2)
    with pytest.raises(CollectiveError, match="not one of the collective's ranks"):
        run_system([program], None, "inf2.48xlarge", functional=False)


def test_rank_beyond_the_instance_is_an_error():
    with pytest.raises(ValueError, match="core 4 does not exist on inf2.xlarge"):
        run_system([tiled_matmul(128, 128, 512)], None, "inf2.xlarge", ranks=[4])


def test_collective_deadlock_is_reported():
    # Core 0 waits on a semaphore nobody signals before reaching the all-reduce.
    ranks = (0, 2)
    stuck = ProgramBuilder("stuck")
    stuck.tensor("x", (2, ROW), "fp32", "input")
    stuck.tensor("y", (2, ROW), "fp32", "output")
    stuck.emit("dma0", Wait(0, 1))
    stuck.emit("dma1", DmaCopy(sbuf(2, ROW, "fp32"), hbm("x", 2, ROW, ROW, "fp32")))
    stuck.signal("dma1", 0)
    stuck.emit("dma0", Wait(0, 2))
    stuck.emit("dma0", AllReduce(hbm("y", 2, ROW, ROW, "fp32"), hbm("x", 2, ROW, ROW, "fp32"),
                                 ranks))
    other = collective_program(AllReduce, 2, ranks, 2)
    with pytest.raises(Exception, match="deadlock|signals it 1 times"):
        run_system([stuck.build(), other], None, "inf2.48xlarge", ranks=list(ranks),
                   functional=False)


def test_single_core_run_refuses_collectives():
    from emulator.runner import run
    with pytest.raises(ValueError, match="collectives need several cores"):
        run(collective_program(AllReduce, 0, [0, 1], 2), functional=False)
