"""The timing model: when every instruction of a program starts and completes.

Timing never computes values.  A program is encoded into flat arrays (one row per instruction:
kind, engine costs in ns, semaphore slots, DMA sizes) and a numba-compiled list scheduler walks
the streams: at each step it commits the unblocked stream whose next instruction can start
earliest.  Engines run their streams in order; a Tensor-engine LoadStationary hides behind the
previous matmul when it can; Vector/GpSimd share an SBUF port and Vector/Scalar a PSUM port
[A2]; a DMA transfer is split by partitions over the core's DMA engines, each adding a fixed
cost and streaming at its bandwidth, while the chip's HBM is a shared server of fixed bandwidth.
Time is float64 nanoseconds; each engine's cycles follow from its clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from emulator.collector import collector_paused
from emulator.costs import Cost, instruction_cost
from emulator.machine import ChipSpec, CoreSpec, chip_spec
from isa.access import AccessPattern
from isa.instructions import DmaCopy, Instruction, MatMul
from isa.program import OTHER, SIGNAL, WAIT, Program
from isa.target import Engine, Space, stream_engine

COMPUTE, DMA, COLLECTIVE = OTHER, 3, 4  # row kinds; WAIT and SIGNAL as in the sync table
PORT_SBUF_VG, PORT_PSUM_VS = 1, 2  # shared ports [A2 2.1]
_DEADLOCK = -1


class TimingDeadlock(RuntimeError):
    """The timed streams cannot make progress (a wait that is never satisfied)."""


@dataclass
class EncodedProgram:
    """Flat arrays the scheduler reads; one row per instruction, streams concatenated."""

    program: Program
    streams: list[str]
    stream_first: np.ndarray  # [n_streams + 1] first row of each stream
    kind: np.ndarray
    busy_ns: np.ndarray
    latency_ns: np.ndarray
    load_ns: np.ndarray  # LoadStationary time of a matmul switching stationary; -1: not a matmul
    dependent_ns: np.ndarray  # extra gap after the previous instruction it depends on
    ports: np.ndarray
    sem_slot: np.ndarray  # wait: slot of the signal it needs; signal: its slot
    dma_bytes: np.ndarray
    dma_rows: np.ndarray
    dma_hbm_bytes: np.ndarray
    stream_queue: np.ndarray  # DMA queue number of each stream, -1 for engines
    n_slots: int
    fact_costs: list[Cost | None] = field(repr=False)  # per distinct instruction
    fact_index: np.ndarray = field(repr=False)  # row -> its distinct instruction
    fact_records: list[Instruction | None] = field(repr=False)  # None: waits and signals

    def cost(self, row: int) -> Cost | None:
        """The cost record of a compute row (None for sync, DMA and collective rows)."""
        return self.fact_costs[self.fact_index[row]]


@dataclass(frozen=True)
class _Facts:
    """What encoding needs of an instruction, computed once per distinct instruction."""

    cost: Cost | None
    reads: tuple[AccessPattern, ...]
    writes: tuple[AccessPattern, ...]
    row: tuple
    record: Instruction | None = None  # None for the facts shared by all waits or signals
    stationary: AccessPattern | None = None  # matmul: the stationary operand
    load_ns: float = 0.0  # matmul: LoadStationary time when the stationary operand changes
    orders: bool = True  # False for DMA transfers: they are not same-engine dependences


# The dtypes of a fact's row: kind, busy, latency, load, dependent, ports, semaphore slot, DMA
# bytes, DMA rows, HBM bytes (EncodedProgram's columns, in order).
_COLUMN_DTYPES = (np.int8, np.float64, np.float64, np.float64, np.float64, np.int8, np.int64,
                  np.float64, np.int64, np.float64)
_SYNC_FACTS = {kind: _Facts(None, (), (), (kind, 0.0, 0.0, -1.0, 0.0, 0, -1, 0.0, 0, 0.0))
               for kind in (WAIT, SIGNAL)}


def contiguous_bytes(ap: AccessPattern) -> int:
    """Bytes of the longest run that is contiguous in memory, from the innermost axis out."""
    run = 1  # in elements
    for stride, size in reversed(ap.axes):
        if stride != run:
            break
        run *= size
    return max(run, 1) * ap.dtype.itemsize


def _overlaps(a: AccessPattern, b: AccessPattern) -> bool:
    """Conservative overlap of two operands (bounding boxes), for same-engine dependences."""
    if a.space is not b.space or (a.space is Space.HBM and a.tensor != b.tensor):
        return False
    if a.space is not Space.HBM and (a.partition_end <= b.partition_start
                                     or b.partition_end <= a.partition_start):
        return False
    (a0, a1), (b0, b1) = a.byte_span(), b.byte_span()
    return a0 < b1 and b0 < a1


def _ports(instr: Instruction, engine: Engine) -> int:
    spaces = {ap.space for ap in instr.operand_fields().values()}
    ports = 0
    if engine in (Engine.VECTOR, Engine.GPSIMD) and Space.SBUF in spaces:
        ports |= PORT_SBUF_VG
    if engine in (Engine.VECTOR, Engine.SCALAR) and Space.PSUM in spaces:
        ports |= PORT_PSUM_VS
    return ports


def encode(program: Program, spec: CoreSpec) -> EncodedProgram:
    """Encode `program` for the scheduler; costs come from the opcode table's formulas.

    Facts that depend only on an instruction's value (its cost, operands, ports) are computed
    once per distinct instruction; the context (stationary switches, same-engine dependences,
    semaphore slots) is worked out with array operations over the rows.
    """
    with collector_paused():
        return _encode(program, spec)


def _encode(program: Program, spec: CoreSpec) -> EncodedProgram:
    # Each row refers to the facts of its distinct instruction on its engine (facts 0 and 1
    # stand for every wait and every signal, whose semaphore slots come from the program's
    # instruction table).
    table = program.table
    facts: list[_Facts] = [_SYNC_FACTS[WAIT], _SYNC_FACTS[SIGNAL]]
    fact_of: dict[tuple[Engine, int], int] = {}  # (engine, distinct instruction) -> fact
    stream_queue = np.full(len(program.streams), -1, np.int64)
    index = table.code.astype(np.int64) - WAIT  # waits -> fact 0, signals -> fact 1
    others: list[tuple[Engine, np.ndarray]] = []  # each stream's rows that are not sync
    for s, stream in enumerate(program.streams):
        engine = stream_engine(stream.name)
        if engine is Engine.DMA:
            stream_queue[s] = int(stream.name[3:])
        first = table.stream_first[s]
        rows = first + np.flatnonzero(table.code[first:table.stream_first[s + 1]] == COMPUTE)
        numbers, inverse = np.unique(table.record[rows], return_inverse=True)
        clock = spec.clock_ghz(engine)
        ids = []
        for number in numbers.tolist():
            fid = fact_of.get((engine, number))
            if fid is None:
                fid = fact_of[(engine, number)] = len(facts)
                facts.append(_facts(table.distinct[number], engine, spec, clock))
            ids.append(fid)
        index[rows] = np.array(ids, np.int64)[inverse.ravel()]
        others.append((engine, rows))
    # Each column gathered from the facts straight into its own dtype: a million-row program
    # makes no wide temporary table.
    per_fact = list(zip(*(f.row for f in facts)))
    columns = [np.array(values, dtype)[index] for values, dtype in zip(per_fact, _COLUMN_DTYPES)]
    synchronising = table.code != COMPUTE
    columns[6][synchronising] = table.slot[synchronising]
    _patch_context(columns[3], columns[4], index, facts, others, spec)
    return EncodedProgram(
        program, [s.name for s in program.streams], table.stream_first, *columns, stream_queue,
        table.n_slots, [f.cost for f in facts], index, [f.record for f in facts])


def _patch_context(load_ns: np.ndarray, dependent_ns: np.ndarray, index: np.ndarray,
                   facts: list[_Facts], others: list[tuple[Engine, np.ndarray]],
                   spec: CoreSpec) -> None:
    """LoadStationary time where a matmul's stationary operand differs from the previous
    matmul's on its stream, and the dependent-instruction overhead where an instruction reads
    what the previous one on its engine wrote."""
    stationary_ids: dict[AccessPattern, int] = {}
    stationary = np.array([-1 if f.stationary is None else
                           stationary_ids.setdefault(f.stationary, len(stationary_ids))
                           for f in facts], np.int64)
    load = np.array([f.load_ns for f in facts])
    orders = np.array([f.orders for f in facts], bool)
    for engine, rows in others:
        matmuls = rows[stationary[index[rows]] >= 0]
        if matmuls.size:
            key = stationary[index[matmuls]]
            switched = np.ones(key.size, bool)
            switched[1:] = key[1:] != key[:-1]
            load_ns[matmuls] = np.where(switched, load[index[matmuls]], 0.0)
        # The ~100-cycle dependent overhead is a Vector/Scalar/GpSimd rule [A2 5.2]; PSUM
        # accumulation into the same bank streams back to back on TensorE.
        if engine is Engine.TENSOR:
            continue
        rows = rows[orders[index[rows]]]
        if rows.size < 2:
            continue
        pairs, inverse = np.unique(index[rows[:-1]] * len(facts) + index[rows[1:]],
                                   return_inverse=True)
        depends = np.array([any(_overlaps(r, w) for r in facts[later].reads
                                for w in facts[earlier].writes)
                            for earlier, later in zip(*np.divmod(pairs, len(facts)))], bool)
        dependent_ns[rows[1:][depends[inverse.ravel()]]] = spec.dependent_overhead / \
            spec.clock_ghz(engine)


def _facts(instr: Instruction, engine: Engine, spec: CoreSpec, clock: float) -> _Facts:
    if isinstance(instr, DmaCopy):
        hbm = sum(ap.nbytes for ap in (instr.src, instr.dst) if ap.space is Space.HBM)
        rows = max(instr.src.partitions, instr.dst.partitions)
        # Engines move bursts: a run of contiguous bytes shorter than a burst costs a burst.
        run = min(contiguous_bytes(instr.src), contiguous_bytes(instr.dst))
        moved = instr.src.nbytes * max(1.0, spec.dma_burst_bytes / run)
        row = (DMA, 0.0, 0.0, -1.0, 0.0, 0, -1, float(moved), rows, float(hbm))
        return _Facts(None, (), (), row, instr, orders=False)
    if instr.spec().collective:  # timed by the interconnect model of a multi-core run
        nbytes = sum(ap.nbytes for ap in instr.operand_fields().values())
        return _Facts(None, (), (), (COLLECTIVE, 0.0, 0.0, -1.0, 0.0, 0, -1, float(nbytes), 0,
                                     0.0), instr)
    cost = instruction_cost(instr, engine, spec)
    row = (COMPUTE, cost.busy / clock, cost.latency / clock, -1.0, 0.0, _ports(instr, engine),
           -1, 0.0, 0, 0.0)
    reads, writes = tuple(instr.reads().values()), tuple(instr.writes().values())
    if isinstance(instr, MatMul):
        return _Facts(cost, reads, writes, row, instr, instr.stationary, cost.load / clock)
    return _Facts(cost, reads, writes, row, instr)


@numba.njit(cache=True)
def _schedule(stream_first, kind, busy, latency, load, dependent, ports, sem_slot, dma_bytes,
              dma_rows, dma_hbm, stream_queue, stream_core, core_chip, n_slots, delay,
              coll_of_row, coll_first, coll_rows, coll_duration, coll_link_first, coll_links,
              n_links, dma_engines, dma_bw, dma_fixed, hbm_bw,
              semaphore_ns):  # pragma: no cover - compiled; tested through schedule()
    n_streams = stream_first.shape[0] - 1
    n = kind.shape[0]
    n_cores = core_chip.shape[0]
    start = np.zeros(n)
    end = np.zeros(n)
    order = np.full(n, -1, np.int64)
    pos = stream_first[:-1].copy()
    ready = np.zeros(n_streams)  # earliest start of the next instruction (after waits)
    free = np.zeros(n_streams)  # the engine's issue interval ends here
    done = np.zeros(n_streams)  # latest completion of the stream's instructions so far
    last_mm = np.zeros(n_streams)  # start of the previous matmul (LoadStationary overlap)
    sig_time = np.full(max(n_slots, 1), -1.0)
    port_vg = np.zeros(n_cores)  # Vector/GpSimd SBUF port, per core
    port_vs = np.zeros(n_cores)  # Vector/Scalar PSUM port, per core
    dma_free = np.zeros(n_cores * dma_engines)
    dma_busy = np.zeros(n_cores * dma_engines)
    hbm_free = np.zeros(core_chip.max() + 1)  # device memory, per chip
    n_coll = coll_first.shape[0] - 1
    arrived = np.zeros(n, np.bool_)
    coll_count = np.zeros(max(n_coll, 1), np.int64)
    coll_arrival = np.zeros(max(n_coll, 1))
    link_free = np.zeros(max(n_links, 1))
    committed = 0
    while committed < n:
        best = -1
        best_t = np.inf
        for s in range(n_streams):
            i = pos[s]
            if i >= stream_first[s + 1]:
                continue
            k = kind[i]
            core = stream_core[s]
            if k == 1:  # WAIT
                signalled = sig_time[sem_slot[i]]
                if signalled < 0.0:
                    continue
                t = max(ready[s], signalled + semaphore_ns)
            elif k == 2:  # SIGNAL
                t = max(ready[s], done[s])
            elif k == 3:  # DMA
                t = max(ready[s], free[s])
            elif k == 4:  # COLLECTIVE: a rendezvous of every participant's queue
                c = coll_of_row[i]
                if not arrived[i]:
                    arrived[i] = True
                    coll_count[c] += 1
                    coll_arrival[c] = max(coll_arrival[c], max(ready[s], free[s]))
                if coll_count[c] < coll_first[c + 1] - coll_first[c]:
                    continue
                t = coll_arrival[c]
                for j in range(coll_link_first[c], coll_link_first[c + 1]):
                    t = max(t, link_free[coll_links[j]])
            else:
                t = max(ready[s], free[s] + dependent[i])
                if ports[i] & 1:
                    t = max(t, port_vg[core])
                if ports[i] & 2:
                    t = max(t, port_vs[core])
                if load[i] > 0.0:  # LoadStationary may start with the previous matmul
                    t = max(t, max(last_mm[s], ready[s]) + load[i])
            if t < best_t:
                best_t = t
                best = s
        if best < 0:
            return start, end, order, dma_busy, committed
        s = best
        i = pos[s]
        t = best_t
        k = kind[i]
        core = stream_core[s]
        if k == 4:
            c = coll_of_row[i]
            finish = t + coll_duration[c]
            for j in range(coll_link_first[c], coll_link_first[c + 1]):
                link_free[coll_links[j]] = finish
            for j in range(coll_first[c], coll_first[c + 1]):
                row = coll_rows[j]
                owner = np.searchsorted(stream_first, row, side="right") - 1
                start[row] = t
                end[row] = finish
                free[owner] = finish
                done[owner] = max(done[owner], finish)
                order[committed] = row
                committed += 1
                pos[owner] += 1
            continue
        start[i] = t
        if k == 1:
            ready[s] = t
            end[i] = t
        elif k == 2:
            sig_time[sem_slot[i]] = t
            end[i] = t
        elif k == 3:
            rows = dma_rows[i]
            per = (rows + dma_engines - 1) // dma_engines  # P=128: 8 per engine [A2][DMAO]
            chunks = (rows + per - 1) // per
            chip = core_chip[core]
            finish = t
            streaming = np.inf
            for j in range(chunks):
                share = min(per, rows - j * per) / rows
                e = core * dma_engines + (stream_queue[s] + j) % dma_engines
                data = max(t + dma_fixed, dma_free[e])
                streaming = min(streaming, data)
                streamed = data + dma_bytes[i] * share / dma_bw + delay[i]
                chunk_end = streamed
                if dma_hbm[i] > 0.0:
                    hbm_free[chip] = max(hbm_free[chip], data) + dma_hbm[i] * share / hbm_bw
                    chunk_end = max(streamed, hbm_free[chip])
                dma_busy[e] += chunk_end - data
                dma_free[e] = chunk_end
                finish = max(finish, chunk_end)
            # A queue prepares its next transfer's descriptors while this one streams, but does
            # not run further ahead: queue-mates wait, other queues get the engines in turn.
            free[s] = streaming
            end[i] = finish
            done[s] = max(done[s], finish)
        else:
            occupied = busy[i] + delay[i]
            free[s] = t + occupied
            end[i] = t + latency[i] + delay[i]
            done[s] = max(done[s], end[i])
            if ports[i] & 1:
                port_vg[core] = t + occupied
            if ports[i] & 2:
                port_vs[core] = t + occupied
            if load[i] >= 0.0:
                last_mm[s] = t
        order[committed] = i
        committed += 1
        pos[s] += 1
    return start, end, order, dma_busy, n


@dataclass
class Schedule:
    """Start and completion time (ns) of every instruction, in encoded row order."""

    encoded: EncodedProgram
    start_ns: np.ndarray
    end_ns: np.ndarray
    order: np.ndarray  # rows in the order the scheduler committed them (a legal order)
    dma_engine_busy_ns: np.ndarray
    delay_ns: np.ndarray

    @property
    def latency_ns(self) -> float:
        return float(self.end_ns.max()) if self.end_ns.size else 0.0

    def legal_order(self) -> list[tuple[str, int]]:
        """The committed order as (stream, index) pairs, for the functional executor."""
        first = self.encoded.stream_first
        streams = np.searchsorted(first, self.order, side="right") - 1
        return [(self.encoded.streams[s], int(r - first[s])) for s, r in zip(streams, self.order)]


@dataclass(frozen=True)
class CollectiveTable:
    """Matched collectives of a multi-core run: each one's participant rows (in the merged
    row numbering), its duration and the NeuronLinks it occupies."""

    rows: list[list[int]]
    duration_ns: list[float]
    links: list[list[int]]
    n_links: int

    @staticmethod
    def empty() -> CollectiveTable:
        return CollectiveTable([], [], [], 0)


def _flatten(groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    first = np.zeros(len(groups) + 1, np.int64)
    first[1:] = np.cumsum([len(g) for g in groups])
    flat = np.array([x for g in groups for x in g], np.int64)
    return first, flat


def run_scheduler(encoded: list[EncodedProgram], core_chip: list[int], spec: CoreSpec,
                  chip: ChipSpec, collectives: CollectiveTable,
                  delay_ns: np.ndarray | None = None):
    """Schedule the programs of several cores together (shared HBM per chip, collectives).

    Returns (start, end, order, dma_busy, committed) over the merged rows: the rows of core
    k's program follow those of core k-1, streams likewise."""
    offsets = np.cumsum([0] + [e.kind.shape[0] for e in encoded])
    n = int(offsets[-1])
    slot_offsets = np.cumsum([0] + [e.n_slots for e in encoded])
    stream_first = np.concatenate(
        [e.stream_first[:-1] + offsets[k] for k, e in enumerate(encoded)] + [[n]]).astype(np.int64)
    stream_core = np.concatenate(
        [np.full(len(e.streams), k, np.int64) for k, e in enumerate(encoded)]).astype(np.int64)

    def cat(name: str) -> np.ndarray:
        if len(encoded) == 1:  # one core: its arrays as they are (no copies of a big program)
            return getattr(encoded[0], name)
        return np.concatenate([getattr(e, name) for e in encoded])

    if len(encoded) == 1:
        sem_slot = encoded[0].sem_slot
    else:
        sem_slot = np.concatenate([np.where(e.sem_slot >= 0, e.sem_slot + slot_offsets[k], -1)
                                   for k, e in enumerate(encoded)]).astype(np.int64)
    delay = np.zeros(n) if delay_ns is None else np.asarray(delay_ns, np.float64)
    if delay.shape != (n,) or np.any(delay < 0):
        raise ValueError(f"delay_ns must be {n} non-negative values, got shape {delay.shape}")
    coll_of_row = np.full(n, -1, np.int64)
    for c, rows in enumerate(collectives.rows):
        coll_of_row[rows] = c
    coll_first, coll_rows = _flatten(collectives.rows)
    link_first, links = _flatten(collectives.links)
    return _schedule(
        stream_first, cat("kind"), cat("busy_ns"), cat("latency_ns"), cat("load_ns"),
        cat("dependent_ns"), cat("ports"), sem_slot, cat("dma_bytes"), cat("dma_rows"),
        cat("dma_hbm_bytes"), cat("stream_queue"), stream_core,
        np.asarray(core_chip, np.int64), int(slot_offsets[-1]), delay, coll_of_row, coll_first,
        coll_rows, np.asarray(collectives.duration_ns, np.float64), link_first, links,
        collectives.n_links, spec.dma_engines, spec.dma_engine_gbps, spec.dma_fixed_ns,
        chip.hbm_gbps, spec.semaphore_ns)


def blocked_instructions(programs: list[Program], encoded: list[EncodedProgram],
                         order: np.ndarray, committed: int) -> list[str]:
    """Where each unfinished stream stopped, for deadlock messages."""
    done = np.sort(order[:committed])
    blocked, offset = [], 0
    for k, (program, enc) in enumerate(zip(programs, encoded)):
        for s, name in enumerate(enc.streams):
            first, last = enc.stream_first[s] + offset, enc.stream_first[s + 1] + offset
            index = int(np.searchsorted(done, last) - np.searchsorted(done, first))
            if first + index < last:
                prefix = f"core {k} " if len(programs) > 1 else ""
                blocked.append(prefix + program.locate(name, index))
        offset += enc.kind.shape[0]
    return blocked


def schedule(program: Program, spec: CoreSpec, chip: ChipSpec | str = "inf2",
             delay_ns: np.ndarray | None = None, encoded: EncodedProgram | None = None
             ) -> Schedule:
    """Time `program` on one core of `chip`.  `delay_ns` adds extra time per instruction
    (used to test that timing perturbations never change results)."""
    chip = chip_spec(chip)
    encoded = encode(program, spec) if encoded is None else encoded
    if np.any(encoded.kind == COLLECTIVE):
        row = int(np.argmax(encoded.kind == COLLECTIVE))
        stream = int(np.searchsorted(encoded.stream_first, row, side="right") - 1)
        raise ValueError(
            f"{program.locate(encoded.streams[stream], row - int(encoded.stream_first[stream]))}"
            f": collectives need several cores; run the programs with emulator.system")
    start, end, order, dma_busy, committed = run_scheduler(
        [encoded], [0], spec, chip, CollectiveTable.empty(), delay_ns)
    n = encoded.kind.shape[0]
    if committed < n:
        raise TimingDeadlock(
            f"program {program.name} deadlocks after {committed} of {n} instructions; blocked: "
            + "; ".join(blocked_instructions([program], [encoded], order, committed)))
    return Schedule(encoded, start, end, order, dma_busy, np.zeros(n) if delay_ns is None
                    else np.asarray(delay_ns, np.float64))
