"""Tests of the race detector (emulator/races.py) against hand-made programs and a brute-force
reference: every pair of accesses, happens-before as reachability in the signal/wait graph
(networkx), and the bytes an access touches as the ones the functional memory marks written."""

from __future__ import annotations

import dataclasses
import re

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.functional import DeadlockError, legal_order
from emulator.memory import DeviceMemory, OnChipMemory
from emulator.races import (
    Access,
    AccumulationError,
    AccumulationHazard,
    RaceError,
    Region,
    check_races,
    find_accumulation_hazards,
    find_races,
    happens_before,
    touched_bytes,
)
from isa import (
    INF2,
    AccessPattern,
    DmaCopy,
    DramTensor,
    MatMul,
    Memset,
    Program,
    ProgramBuilder,
    ProgramError,
    Signal,
    Space,
    Stream,
    TensorCopy,
    TensorScalar,
    Transpose,
    Wait,
    hbm,
    psum,
    sbuf,
)
from kernels.programs import tiled_matmul
from tests.strategies import access_patterns, dram_tensors, hbm_patterns

TILE = sbuf(128, 64, "fp32")
OTHER_TILE = sbuf(128, 64, "fp32", offset=4096)


def where(program: Program, stream: str, index: int) -> str:
    """How the detector names an instruction, escaped for `match=`."""
    return re.escape(program.locate(stream, index))


def load_program(synchronised: bool) -> Program:
    """dma0 loads a tile that the vector engine then scales, with or without a semaphore."""
    b = ProgramBuilder("load_then_scale")
    b.tensor("x", (128, 64), "fp32", "input")
    b.emit("dma0", DmaCopy(TILE, hbm("x", 128, 64, 64, "fp32")))
    if synchronised:
        b.sync("dma0", "vector", b.semaphore())
    b.emit("vector", TensorScalar(OTHER_TILE, TILE, "multiply", 2.0))
    return b.build()


# ---- the brute-force reference ---------------------------------------------------------------
def reference_before(program: Program) -> set[tuple[tuple[str, int], tuple[str, int]]]:
    """Every (a, b) with a path of program order and signal->wait edges from a to b."""
    graph = nx.DiGraph()
    signals: dict[tuple[int, int], tuple[str, int]] = {}
    for stream in program.streams:
        count: dict[int, int] = {}
        for index, instr in enumerate(stream.instructions):
            graph.add_node((stream.name, index))
            if index:
                graph.add_edge((stream.name, index - 1), (stream.name, index))
            if isinstance(instr, Signal):
                count[instr.sem] = count.get(instr.sem, 0) + 1
                signals[(instr.sem, count[instr.sem])] = (stream.name, index)
    for stream in program.streams:
        for index, instr in enumerate(stream.instructions):
            if isinstance(instr, Wait):
                graph.add_edge(signals[(instr.sem, instr.value)], (stream.name, index))
    return {(a, b) for a in graph for b in nx.descendants(graph, a)}


class ByteOracle:
    """Bytes an access pattern touches, as the functional memory records a write of it."""

    def __init__(self, program: Program, target=INF2) -> None:
        self.on_chip = {space: OnChipMemory(space, target) for space in (Space.SBUF, Space.PSUM)}
        self.hbm = DeviceMemory()
        for tensor in program.tensors:
            self.hbm.allocate(tensor)
        self.cache: dict[AccessPattern, np.ndarray] = {}
        self.shared: dict[tuple[AccessPattern, AccessPattern], bool] = {}

    def share(self, a: AccessPattern, b: AccessPattern) -> bool:
        """Whether a and b touch a common byte (remembered: mutants repeat the same pairs)."""
        if (a, b) not in self.shared:
            self.shared[(a, b)] = ((a.space, a.tensor) == (b.space, b.tensor)
                                   and len(np.intersect1d(self(a), self(b))) > 0)
        return self.shared[(a, b)]

    def __call__(self, ap: AccessPattern) -> np.ndarray:
        if ap not in self.cache:
            memory = self.hbm if ap.space is Space.HBM else self.on_chip[ap.space]
            memory.write(ap, np.zeros(ap.shape, ap.dtype.storage))
            shadow = memory.written[ap.tensor] if ap.space is Space.HBM else memory.written
            self.cache[ap] = np.flatnonzero(shadow)
            shadow[...] = 0
        return self.cache[ap]


def reference_races(program: Program, oracle: ByteOracle) -> set[frozenset]:
    """Every conflicting pair of accesses from different streams that no path orders."""
    before = reference_before(program)
    accesses = []
    for stream in program.streams:
        for index, instr in enumerate(stream.instructions):
            for kind, fields in (("read", instr.reads()), ("write", instr.writes())):
                accesses += [(stream.name, index, name, kind, ap) for name, ap in fields.items()]
    found = set()
    for i, (sa, ia, na, ka, apa) in enumerate(accesses):
        for sb, ib, nb, kb, apb in accesses[i + 1:]:
            if sa == sb or "write" not in (ka, kb):
                continue
            if ((sa, ia), (sb, ib)) in before or ((sb, ib), (sa, ia)) in before:
                continue
            if oracle.share(apa, apb):
                found.add(frozenset({(sa, ia, na), (sb, ib, nb)}))
    return found


def detected(program: Program) -> set[frozenset]:
    return {frozenset({(r.first.stream, r.first.index, r.first.operand),
                       (r.second.stream, r.second.index, r.second.operand)})
            for r in find_races(program, limit=None)}


def without(program: Program, stream: str, index: int) -> Program:
    """The program with one instruction removed."""
    streams = tuple(
        Stream(s.name, s.instructions[:index] + s.instructions[index + 1:]) if s.name == stream
        else s for s in program.streams)
    return Program(program.name, program.tensors, streams)


# ---- producer / consumer ---------------------------------------------------------------------
def test_unsynchronised_load_races_and_names_both_instructions_and_region():
    program = load_program(synchronised=False)
    with pytest.raises(RaceError, match=where(program, "dma0", 0)) as info:
        check_races(program)
    message = str(info.value)
    assert re.search(where(program, "vector", 0), message)
    assert "sbuf partitions 0..127 bytes 0..255" in message
    assert "write-read" in message


def test_load_with_semaphore_is_race_free():
    program = load_program(synchronised=True)
    check_races(program)
    assert find_races(program) == []


def test_race_record_is_frozen_and_describes_the_pair():
    race = find_races(load_program(synchronised=False))[0]
    assert (race.first.stream, race.first.kind, race.first.operand) == ("dma0", "write", "dst")
    assert (race.second.stream, race.second.kind, race.second.operand) == ("vector", "read", "src")
    assert race.region == Region(Space.SBUF, 0, 256, 256, 0, 128)
    with pytest.raises(dataclasses.FrozenInstanceError):
        race.first = race.second


# ---- the kinds of conflict -------------------------------------------------------------------
def two_streams(first: tuple[str, object], second: tuple[str, object]) -> Program:
    b = ProgramBuilder("pair")
    b.tensor("x", (256, 64), "fp32", "scratch")
    for stream, instr in (first, second):
        b.emit(stream, instr)
    return b.build()


def test_write_after_read_without_sync_races():
    program = two_streams(("vector", TensorCopy(OTHER_TILE, TILE)),
                          ("dma0", DmaCopy(TILE, hbm("x", 128, 64, 64, "fp32"))))
    with pytest.raises(RaceError, match="read-write"):
        check_races(program)


def test_write_after_write_without_sync_races():
    program = two_streams(("vector", Memset(TILE, 1.0)), ("gpsimd", Memset(TILE, 2.0)))
    with pytest.raises(RaceError, match=r"write-write.*gpsimd\[0\] memset"):
        check_races(program)


def test_two_dma_queues_writing_the_same_hbm_bytes_race():
    store = DmaCopy(hbm("x", 128, 64, 64, "fp32"), TILE)
    program = two_streams(("dma0", store), ("dma1", store))
    with pytest.raises(RaceError, match="hbm tensor x bytes 0..32767"):
        check_races(program)


@pytest.mark.parametrize("first, second", [
    # partitions 0..63 and 64..127 of the same bytes
    (Memset(sbuf((0, 64), 64, "fp32"), 1.0), Memset(sbuf((64, 64), 64, "fp32"), 2.0)),
    # the same partitions, bytes 0..255 and 256..511
    (Memset(TILE, 1.0), Memset(sbuf(128, 64, "fp32", offset=256), 2.0)),
    # even and odd columns of one tile: bounding boxes overlap, bytes do not
    (Memset(AccessPattern(Space.SBUF, "fp32", 0, 128, 0, ((2, 32),)), 1.0),
     Memset(AccessPattern(Space.SBUF, "fp32", 0, 128, 4, ((2, 32),)), 2.0)),
    # two reads of the same tile
    (TensorCopy(sbuf(128, 64, "fp32", 1024), TILE), TensorCopy(OTHER_TILE, TILE)),
], ids=["disjoint-partitions", "disjoint-bytes", "interleaved-columns", "read-read"])
def test_no_race_without_shared_written_bytes(first, second):
    program = two_streams(("vector", first), ("gpsimd", second))
    check_races(program)
    assert find_races(program) == []


def test_same_parity_columns_do_race_and_report_the_strided_overlap():
    even = AccessPattern(Space.SBUF, "fp32", 0, 128, 0, ((2, 32),))
    program = two_streams(("vector", Memset(even, 1.0)), ("gpsimd", Memset(even, 2.0)))
    (race,) = find_races(program)
    # 32 fp32 elements every other column: bytes 0..251 span, 128 of them shared.
    assert (race.region.byte_start, race.region.byte_end, race.region.byte_count) == (0, 252, 128)


def test_interleaved_hbm_columns_do_not_race_but_shared_rows_do():
    left = DmaCopy(hbm("x", 128, 64, 32, "fp32"), sbuf(128, 32, "fp32"))
    right = DmaCopy(hbm("x", 128, 64, 32, "fp32", offset=128), sbuf(128, 32, "fp32"))
    assert find_races(two_streams(("dma0", left), ("dma1", right))) == []
    middle = DmaCopy(hbm("x", 128, 64, 32, "fp32", offset=64), sbuf(128, 32, "fp32"))
    (race,) = find_races(two_streams(("dma0", left), ("dma1", middle)))
    assert (race.region.tensor, race.region.byte_start) == ("x", 64)


# ---- happens-before --------------------------------------------------------------------------
def chain_program(vector_waits: bool) -> Program:
    """dma0 -> vector -> scalar through two semaphores; only scalar touches dma0's tile."""
    b = ProgramBuilder("chain")
    b.tensor("x", (128, 64), "fp32", "input")
    b.emit("dma0", DmaCopy(TILE, hbm("x", 128, 64, 64, "fp32")))
    first, second = b.semaphore(), b.semaphore()
    value = b.signal("dma0", first)
    if vector_waits:
        b.emit("vector", Wait(first, value))
    b.emit("vector", Memset(sbuf(128, 64, "fp32", 8192), 0.0))
    b.sync("vector", "scalar", second)
    b.emit("scalar", TensorCopy(OTHER_TILE, TILE))
    return b.build()


def test_ordering_is_transitive_across_three_streams():
    program = chain_program(vector_waits=True)
    check_races(program)
    hb = happens_before(program)
    assert hb.before(("dma0", 0), ("scalar", 1))
    assert not hb.before(("scalar", 1), ("dma0", 0))
    assert hb.prefix("scalar", 1) == {"dma0": 2, "vector": 3, "scalar": 1}


def test_breaking_the_chain_in_the_middle_races():
    program = chain_program(vector_waits=False)
    with pytest.raises(RaceError, match=where(program, "scalar", 1)):
        check_races(program)
    assert not happens_before(program).ordered(("dma0", 0), ("scalar", 1))


def test_first_race_is_the_one_the_default_order_reaches_first():
    b = ProgramBuilder("two_races")
    b.emit("vector", TensorCopy(sbuf(128, 64, "fp32", 8192), OTHER_TILE))
    b.emit("vector", TensorCopy(sbuf(128, 64, "fp32", 12288), TILE))
    b.emit("dma0", DmaCopy(TILE, OTHER_TILE))
    b.emit("dma1", DmaCopy(OTHER_TILE, sbuf(128, 64, "fp32", 16384)))
    program = b.build()
    races = find_races(program, limit=None)
    hb = happens_before(program)
    assert [hb.runs_at("vector", 0), hb.runs_at("dma0", 0), hb.runs_at("dma1", 0)] == [0, 2, 3]
    # The default order runs vector[0], vector[1], dma0[0], dma1[0]: races are sorted by
    # where their second access runs, then their first.
    assert [(r.first.where, r.second.where) for r in races] == [
        (program.locate("vector", 1), program.locate("dma0", 0)),
        (program.locate("vector", 0), program.locate("dma1", 0)),
        (program.locate("dma0", 0), program.locate("dma1", 0)),
    ]
    assert find_races(program, limit=1) == races[:1]
    with pytest.raises(RaceError, match=where(program, "dma0", 0)):
        check_races(program)


def test_a_wait_that_is_never_satisfied_is_a_deadlock():
    b = ProgramBuilder("deadlock")
    b.signal("dma0", 0)
    b.emit("vector", Wait(0, 2))
    with pytest.raises(DeadlockError, match="vector"):
        check_races(b.build())


def test_a_semaphore_signalled_from_two_streams_is_refused():
    b = ProgramBuilder("two_signallers")
    b.signal("dma0", 0)
    b.signal("dma1", 0)
    with pytest.raises(ProgramError, match="semaphore 0 is already signalled by stream dma0"):
        happens_before(b.build())


def test_bad_arguments_are_refused():
    program = load_program(synchronised=True)
    with pytest.raises(ValueError, match="limit 0"):
        find_races(program, limit=0)
    with pytest.raises(KeyError, match="no stream 'gpsimd'"):
        happens_before(program).before(("gpsimd", 0), ("vector", 0))
    with pytest.raises(ValueError, match="access kind"):
        Access("vector", 0, Memset(TILE, 0.0), "dst", "update", TILE)
    with pytest.raises(ValueError, match="hazard kind"):
        AccumulationHazard("spill", Access("vector", 0, Memset(TILE, 0.0), "dst", "write", TILE),
                           Region(Space.SBUF, 0, 4, 4, 0, 1))


def test_touched_bytes_follow_strides_and_rows():
    reversed_row = AccessPattern(Space.SBUF, "bf16", 0, 1, 6, ((-1, 4),))
    assert touched_bytes(reversed_row).tolist() == list(range(8))
    rows = hbm("x", 2, 8, 2, "fp32", offset=4)
    assert touched_bytes(rows).tolist() == [4, 5, 6, 7, 8, 9, 10, 11, 36, 37, 38, 39, 40, 41,
                                            42, 43]


@settings(max_examples=150, deadline=None)
@given(st.one_of(access_patterns(Space.SBUF, strided=True), access_patterns(Space.SBUF),
                 access_patterns(Space.PSUM), access_patterns(Space.SBUF, broadcast=True),
                 dram_tensors("x").flatmap(hbm_patterns)))
def test_touched_bytes_are_the_bytes_of_every_element(ap):
    # From the definition: every element's bytes within its row (on chip) or tensor (HBM).
    size = ap.dtype.itemsize
    grids = np.indices(ap.shape, dtype=np.int64)
    index = grids[0] * ap.partition_stride if ap.space is Space.HBM else 0 * grids[0]
    index = index + ap.offset // size
    for axis, (stride, _) in enumerate(ap.axes, start=1):
        index = index + stride * grids[axis]
    expected = np.unique((index.reshape(-1, 1) * size + np.arange(size)).ravel())
    np.testing.assert_array_equal(touched_bytes(ap), expected)


# ---- the built-in tiled matmul -----------------------------------------------------------------
@pytest.fixture(scope="module")
def matmul_program() -> Program:
    return tiled_matmul(256, 256, 1024)


@pytest.fixture(scope="module")
def matmul_oracle(matmul_program) -> ByteOracle:
    return ByteOracle(matmul_program)


def test_tiled_matmul_is_race_free_and_hazard_free(matmul_program):
    check_races(matmul_program)
    assert find_accumulation_hazards(matmul_program) == []


def test_happens_before_matches_graph_reachability_on_tiled_matmul(matmul_program):
    before = reference_before(matmul_program)
    hb = happens_before(matmul_program)
    nodes = [(s.name, i) for s in matmul_program.streams for i in range(len(s.instructions))]
    assert all(hb.before(a, c) == ((a, c) in before) for a in nodes for c in nodes if a != c)


def test_removing_any_wait_from_tiled_matmul_races_exactly_when_the_reference_does(
        matmul_program, matmul_oracle):
    waits = [(s.name, i) for s in matmul_program.streams
             for i, instr in enumerate(s.instructions) if isinstance(instr, Wait)]
    assert len(waits) > 10
    racy = 0
    for stream, index in waits:
        mutant = without(matmul_program, stream, index)
        expected = reference_races(mutant, matmul_oracle)
        assert detected(mutant) == expected, (stream, index)
        if expected:
            racy += 1
            with pytest.raises(RaceError):
                check_races(mutant)
        else:
            check_races(mutant)
    assert racy >= len(waits) // 2  # most waits are needed


def test_tensor_without_its_wait_for_the_first_load_races(matmul_program):
    tensor = matmul_program.stream("tensor").instructions
    assert tensor[0] == Wait(0, 1)  # the first load is dma0's, semaphore 0
    mutant = without(matmul_program, "tensor", 0)
    with pytest.raises(RaceError, match=where(mutant, "dma0", 0)) as info:
        check_races(mutant)
    assert re.search(r"tensor\[\d+\] matmul", str(info.value))


def test_a_larger_tiled_matmul_is_race_free():
    program = tiled_matmul(2048, 128, 4096)
    assert program.instruction_count > 1000
    check_races(program)


# ---- PSUM accumulation groups ------------------------------------------------------------------
STATIONARY = sbuf(128, 128, "bf16")
MOVING = sbuf(128, 512, "bf16", offset=256)
HALF_MOVING = sbuf(128, 256, "bf16", offset=256)
BANK = psum(128, 512)
DRAIN = sbuf(128, 512, "fp32", offset=4096)


def matmul(dst: AccessPattern, accumulate: bool) -> MatMul:
    moving = MOVING if dst.free_size == 512 else HALF_MOVING
    return MatMul(dst, STATIONARY, moving, accumulate)


def group_program(*tensor_ops: object, vector_ops: tuple = ()) -> Program:
    """The tensor stream runs `tensor_ops` (instructions, or ("signal", sem) / ("wait", sem, v));
    then the vector engine waits for the tensor's last signal (semaphore 9) and drains BANK."""
    b = ProgramBuilder("groups")
    for op in tensor_ops:
        if isinstance(op, tuple) and op[0] == "signal":
            b.emit("tensor", Signal(op[1]))
        elif isinstance(op, tuple) and op[0] == "wait":
            b.emit("tensor", Wait(op[1], op[2]))
        else:
            b.emit("tensor", op)
    b.emit("tensor", Signal(9))
    for op in vector_ops:
        b.emit("vector", op)
    b.emit("vector", Wait(9, 1))
    b.emit("vector", TensorCopy(DRAIN, BANK))
    return b.build()


def test_a_correct_accumulation_group_passes():
    program = group_program(matmul(BANK, False), matmul(BANK, True), matmul(BANK, True))
    check_races(program)
    assert find_accumulation_hazards(program) == []


def test_interleaved_groups_on_disjoint_banks_pass():
    other = psum(128, 512, offset=2048)
    program = group_program(matmul(BANK, False), matmul(other, False), matmul(BANK, True),
                            matmul(other, True), matmul(BANK, True))
    check_races(program)


def test_accumulate_without_an_open_group_is_an_error():
    program = group_program(matmul(BANK, True))
    with pytest.raises(AccumulationError, match="no accumulation group is open") as info:
        check_races(program)
    assert re.search(where(program, "tensor", 0), str(info.value))
    assert "psum partitions 0..127 bytes 0..2047" in str(info.value)


def test_accumulate_into_a_group_opened_on_another_bank_is_an_error():
    program = group_program(matmul(psum(128, 512, offset=2048), False), matmul(BANK, True))
    (hazard,) = find_accumulation_hazards(program)
    assert hazard.kind == "no-open-group" and hazard.access.index == 1


@pytest.mark.parametrize("intruder", [
    psum(128, 256),  # the first half of the bank
    psum(128, 256, offset=1024),  # the second half
], ids=["first-half", "second-half"])
def test_a_group_overlapping_an_open_group_is_an_error(intruder):
    program = group_program(matmul(BANK, False), matmul(intruder, False), matmul(BANK, True))
    with pytest.raises(AccumulationError, match="interleaved accumulation groups") as info:
        check_races(program)
    message = str(info.value)
    assert re.search(where(program, "tensor", 2), message)
    # The group it interleaves with is the intruder's, started by tensor[1].
    assert re.search(r"started by " + where(program, "tensor", 1), message)
    low = intruder.offset
    assert f"bytes {low}..{low + 1023}" in message


def test_partially_overlapping_group_regions_interleave():
    first = psum(128, 256)  # bytes 0..1023
    shifted = psum(128, 256, offset=512)  # bytes 512..1535
    program = group_program(matmul(first, False), matmul(shifted, False), matmul(first, True))
    (hazard,) = find_accumulation_hazards(program)
    assert hazard.kind == "interleaved-groups"
    assert (hazard.region.byte_start, hazard.region.byte_end) == (512, 1024)


def test_a_transpose_into_an_open_group_closes_it():
    transpose = Transpose(psum(128, 128), sbuf(128, 128, "fp32"))
    program = group_program(matmul(BANK, False), transpose, matmul(BANK, True))
    with pytest.raises(AccumulationError, match="interleaved accumulation groups"):
        check_races(program)


def test_a_new_group_after_the_drain_is_fine():
    program = group_program(matmul(BANK, False), matmul(BANK, True), ("signal", 3), ("wait", 4, 1),
                            matmul(psum(128, 256), False), matmul(psum(128, 256), True),
                            vector_ops=(Wait(3, 1), TensorCopy(DRAIN, BANK), Signal(4)))
    check_races(program)


def test_an_ordered_read_between_accumulates_reads_a_partial_sum():
    # tensor starts the group, lets vector read, waits for the read, then accumulates again:
    # every access is ordered (no data race) but vector saw only the first product.
    program = group_program(matmul(BANK, False), ("signal", 3), ("wait", 4, 1),
                            matmul(BANK, True),
                            vector_ops=(Wait(3, 1), TensorCopy(DRAIN, BANK), Signal(4)))
    assert find_races(program) == []
    with pytest.raises(AccumulationError, match="reads a partial sum") as info:
        check_races(program)
    message = str(info.value)
    assert re.search(where(program, "vector", 1), message)
    assert re.search(r"after " + where(program, "tensor", 0), message)
    assert re.search(r"last accumulate " + where(program, "tensor", 3), message)


def test_an_ordered_write_into_an_open_group_is_an_error():
    program = group_program(matmul(BANK, False), ("signal", 3), ("wait", 4, 1),
                            matmul(BANK, True),
                            vector_ops=(Wait(3, 1), Memset(BANK, 0.0), Signal(4)))
    with pytest.raises(AccumulationError, match="writes into an open accumulation group"):
        check_races(program)


def test_an_unordered_partial_read_is_reported_as_a_partial_sum():
    program = group_program(matmul(BANK, False), ("signal", 3), matmul(BANK, True),
                            vector_ops=(Wait(3, 1), TensorCopy(DRAIN, BANK)))
    assert find_races(program)  # it is also a data race with the second matmul
    with pytest.raises(AccumulationError, match="reads a partial sum"):
        check_races(program)


# ---- property: the detector agrees with the brute-force reference ----------------------------
STREAMS = ("dma0", "dma1", "vector", "scalar")
# 32 partitions x 8 fp32 each; they overlap each other in every way the detector distinguishes.
ON_CHIP = (
    sbuf((0, 32), 8, "fp32"),
    sbuf((0, 32), 8, "fp32", offset=16),  # half of the first
    AccessPattern(Space.SBUF, "fp32", 0, 32, 0, ((2, 8),)),  # even columns 0..14
    AccessPattern(Space.SBUF, "fp32", 0, 32, 4, ((2, 8),)),  # odd columns 1..15
    AccessPattern(Space.SBUF, "fp32", 0, 32, 28, ((-1, 8),)),  # the first, backwards
    AccessPattern(Space.SBUF, "fp32", 0, 32, 0, ((8, 2), (1, 4))),  # columns 0..3 and 8..11
    sbuf((32, 32), 8, "fp32"),  # other partitions
    sbuf((0, 32), 8, "fp32", offset=64),  # other bytes
)
OFF_CHIP = tuple(AccessPattern(Space.HBM, "fp32", 0, 32, offset, ((1, 8),), "x", 16)
                 for offset in (0, 32, 16, 2048))  # columns 0..7, 8..15, 4..11; rows 32..63
RANDOM_TENSORS = Program("tensors", (DramTensor("x", (64, 16), "fp32"),))
# A small SBUF keeps the reference's byte sets cheap; one oracle serves every example.
RANDOM_ORACLE = ByteOracle(RANDOM_TENSORS, dataclasses.replace(INF2, sbuf_partition_bytes=128))


@st.composite
def random_programs(draw) -> Program:
    """Copies over a few overlapping tiles on four streams, with random semaphore chains.

    Each stream signals its own semaphore; a wait only asks for signals already emitted, so the
    emission order is itself a legal schedule and no program deadlocks."""
    b = ProgramBuilder("random", list(RANDOM_TENSORS.tensors))
    signals = dict.fromkeys(STREAMS, 0)
    for _ in range(draw(st.integers(1, 20))):
        stream = draw(st.sampled_from(STREAMS))
        sources = [s for s in STREAMS if s != stream and signals[s]]
        action = draw(st.sampled_from(("access", "access", "signal", "wait")))
        if action == "signal":
            b.emit(stream, Signal(STREAMS.index(stream)))
            signals[stream] += 1
        elif action == "wait" and sources:
            source = draw(st.sampled_from(sources))
            # Mostly the newest signal (a chain), sometimes an older one (a weaker order).
            value = draw(st.one_of(st.just(signals[source]), st.integers(1, signals[source])))
            b.emit(stream, Wait(STREAMS.index(source), value))
        elif stream.startswith("dma"):
            pair = draw(st.sampled_from(("load", "store", "move")))
            dst = draw(st.sampled_from(OFF_CHIP if pair == "store" else ON_CHIP))
            src = draw(st.sampled_from(OFF_CHIP if pair == "load" else ON_CHIP))
            b.emit(stream, DmaCopy(dst, src))
        else:
            b.emit(stream, TensorCopy(draw(st.sampled_from(ON_CHIP)),
                                      draw(st.sampled_from(ON_CHIP))))
    return b.build()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_programs())
def test_random_programs_race_exactly_when_the_reference_says(program):
    expected = reference_races(program, RANDOM_ORACLE)
    assert detected(program) == expected
    if expected:
        with pytest.raises(RaceError):
            check_races(program)
    else:
        check_races(program)


@settings(max_examples=100, deadline=None)
@given(random_programs())
def test_random_programs_happens_before_matches_reachability(program):
    before = reference_before(program)
    hb = happens_before(program)
    nodes = [(s.name, i) for s in program.streams for i in range(len(s.instructions))]
    assert all(hb.before(a, c) == ((a, c) in before) for a in nodes for c in nodes if a != c)


@settings(max_examples=60, deadline=None)
@given(random_programs())
def test_vector_clock_positions_are_places_in_the_default_legal_order(program):
    # Races are reported in the order the functional executor's default interleaving meets them.
    hb = happens_before(program)
    for place, (stream, index) in enumerate(legal_order(program)):
        assert hb.runs_at(stream, index) == place
