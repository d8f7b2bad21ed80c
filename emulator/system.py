"""Many NeuronCores at once: one program per core, shared device memory per chip, collectives.

`run_system(programs, inputs, machine)` runs program k on core `ranks[k]` of an instance (core
r sits on chip r // cores_per_chip).  The cores' schedules are computed together: the cores of
a chip share its HBM bandwidth, and collective instructions (all_reduce, all_gather,
reduce_scatter, send/recv) are rendezvous whose time comes from the ring algorithm run over the
instance's NeuronLink topology (`emulator.interconnect`), occupying the links they use.  Values
are computed in the timed order; each core's tensors live in its own part of device memory, so
cores exchange data only through collectives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emulator.collector import collector_paused
from emulator.functional import FunctionalCore, prepare_inputs
from emulator.interconnect import Topology
from emulator.machine import InstanceSpec
from emulator.memory import DeviceMemory
from emulator.races import check_races
from emulator.report import Report, core_report
from emulator.runner import resolve_instance
from emulator.timing import (
    CollectiveTable,
    Schedule,
    TimingDeadlock,
    blocked_instructions,
    encode,
    run_scheduler,
)
from isa.instructions import AllGather, Instruction, Recv, Send
from isa.program import Program


class CollectiveError(ValueError):
    """Collectives that cannot match up across cores; the message names core and instruction."""


@dataclass
class SystemResult:
    """Outputs of every core (by rank) and the report of the whole run."""

    outputs: dict[int, dict[str, np.ndarray]]
    report: Report | None
    schedules: list[Schedule] = field(repr=False, default_factory=list)


@dataclass(frozen=True)
class _Row:
    core: int  # index into the programs list
    stream: str
    index: int
    instr: Instruction


def _rows(programs: list[Program]) -> list[_Row]:
    """Every instruction of every program, in the order the scheduler numbers them."""
    rows = []
    for k, program in enumerate(programs):
        for stream in program.streams:
            rows.extend(_Row(k, stream.name, i, instr)
                        for i, instr in enumerate(stream.instructions))
    return rows


def _match_collectives(rows: list[_Row], ranks: list[int]) -> list[list[int]]:
    """Group collective rows into instances: the n-th collective a core issues over a rank set
    meets the n-th of every other member; a send meets the matching recv."""
    pending: dict[tuple, dict[int, int]] = {}
    seen: dict[tuple, int] = {}
    for row_number, row in enumerate(rows):
        instr = row.instr
        if not instr.spec().collective:
            continue
        rank = ranks[row.core]
        if isinstance(instr, Send):
            key = ("p2p", rank, instr.peer, instr.tag)
        elif isinstance(instr, Recv):
            key = ("p2p", instr.peer, rank, instr.tag)
        else:
            if rank not in instr.ranks:
                raise CollectiveError(f"core {rank} {row.stream}[{row.index}] {instr}: the core "
                                      f"is not one of the collective's ranks {instr.ranks}")
            key = (instr.opcode, instr.ranks)
        occurrence = seen.get((key, rank), 0)
        seen[(key, rank)] = occurrence + 1
        pending.setdefault((*key, occurrence), {})[rank] = row_number
    groups = []
    for key, members in pending.items():
        expected = set(key[1:3]) if key[0] == "p2p" else set(key[1])
        missing = sorted(expected - set(members))
        if missing:
            some = rows[next(iter(members.values()))]
            raise CollectiveError(
                f"core {ranks[some.core]} {some.stream}[{some.index}] {some.instr}: no matching "
                f"instruction on core(s) {missing}")
        if key[0] == "p2p":
            groups.append([members[key[1]], members[key[2]]])  # sender first
        else:
            groups.append([members[r] for r in key[1]])  # in the collective's rank order
    return groups


def _collective_table(groups: list[list[int]], rows: list[_Row], topology: Topology,
                      ranks: list[int]) -> tuple[CollectiveTable, dict[str, float]]:
    link_index: dict[tuple[int, int], int] = {}
    durations, links, link_bytes = [], [], {}
    for group in groups:
        first = rows[group[0]].instr
        if isinstance(first, Send):
            transfer = topology.point_to_point(ranks[rows[group[0]].core],
                                               ranks[rows[group[1]].core], first.src.nbytes)
        else:
            size = first.dst.nbytes if isinstance(first, AllGather) else first.src.nbytes
            transfer = topology.ring_collective(first.opcode, first.ranks, size)
        durations.append(transfer.duration_ns)
        used = []
        for link, nbytes in transfer.link_bytes.items():
            used.append(link_index.setdefault(link, len(link_index)))
            name = f"chip{link[0]}->chip{link[1]}"
            link_bytes[name] = link_bytes.get(name, 0.0) + nbytes
        links.append(used)
    return CollectiveTable(groups, durations, links, len(link_index)), link_bytes


@collector_paused()
def run_system(programs: list[Program], inputs: list[dict[str, np.ndarray]] | None = None,
               machine: str | InstanceSpec = "inf2.48xlarge", *, ranks: list[int] | None = None,
               functional: bool = True, race_check: bool = True) -> SystemResult:
    """Run program k on core ranks[k] (default k) of `machine`; see the module docstring.
    Each program is first checked for races between its own streams (`emulator.races`)."""
    instance = resolve_instance(machine)
    spec, chip = instance.chip.core, instance.chip
    ranks = list(range(len(programs))) if ranks is None else list(ranks)
    if len(ranks) != len(programs) or len(set(ranks)) != len(ranks):
        raise ValueError(f"ranks {ranks} must give each of the {len(programs)} programs its own "
                         f"core")
    topology = Topology(instance)
    core_chip = [topology.chip_of(r) for r in ranks]
    for program in programs:
        program.validate(spec.target)
        if race_check:
            check_races(program)
    encoded = [encode(p, spec) for p in programs]
    rows = _rows(programs)
    groups = _match_collectives(rows, ranks)
    table, link_bytes = _collective_table(groups, rows, topology, ranks)
    start, end, order, dma_busy, committed = run_scheduler(encoded, core_chip, spec, chip, table)
    if committed < len(rows):
        raise TimingDeadlock(f"{len(programs)} programs deadlock after {committed} of "
                             f"{len(rows)} instructions; blocked: "
                             + "; ".join(blocked_instructions(programs, encoded, order,
                                                              committed)))
    schedules = _per_core(encoded, start, end, order, dma_busy, spec.dma_engines)
    report = _system_report(instance, programs, schedules, core_chip, link_bytes, ranks)
    outputs = {}
    if functional:
        outputs = _execute(programs, inputs or [{} for _ in programs], rows, groups, order,
                           spec.target, ranks)
    return SystemResult(outputs, report, schedules)


def _per_core(encoded, start, end, order, dma_busy, engines) -> list[Schedule]:
    schedules, offset = [], 0
    for k, enc in enumerate(encoded):
        n = enc.kind.shape[0]
        mine = order[(order >= offset) & (order < offset + n)] - offset
        schedules.append(Schedule(enc, start[offset:offset + n], end[offset:offset + n], mine,
                                  dma_busy[k * engines:(k + 1) * engines], np.zeros(n)))
        offset += n
    return schedules


def _system_report(instance: InstanceSpec, programs, schedules, core_chip, link_bytes,
                   ranks) -> Report:
    spec = instance.chip.core
    latency = max((s.latency_ns for s in schedules), default=0.0)
    cores, tensor_flops = [], 0
    for schedule in schedules:
        core, flops = core_report(schedule, spec, latency)
        cores.append(core)
        tensor_flops += flops
    chips = []
    for chip in sorted(set(core_chip)):
        members = [k for k, c in enumerate(core_chip) if c == chip]
        chips.append({
            "chip": chip, "cores": [ranks[k] for k in members],
            "tensor_busy_ns": sum(cores[k].engines.get("tensor").busy_ns for k in members
                                  if "tensor" in cores[k].engines),
            "hbm_bytes": sum(cores[k].memory["hbm_read_bytes"] + cores[k].memory[
                "hbm_write_bytes"] for k in members),
        })
    flops = sum(e.flops for c in cores for e in c.engines.values())
    hbm = sum(c["hbm_bytes"] for c in chips)
    peak = spec.tensor_peak_flops * len(schedules)
    hfu = tensor_flops / (latency * 1e-9 * peak) if latency else 0.0
    name = programs[0].name if len(programs) == 1 else f"{len(programs)} programs"
    return Report(name, f"{instance.name} ({spec.name})", latency, cores, hfu,
                  flops / hbm if hbm else None, None, chips, dict(sorted(link_bytes.items())))


def _execute(programs, inputs, rows, groups, order, target, ranks) -> dict[int, dict]:
    if len(inputs) != len(programs):
        raise ValueError(f"give one input dict per program: {len(programs)} programs, "
                         f"{len(inputs)} input dicts")
    cores = []
    for program, given in zip(programs, inputs):
        hbm = DeviceMemory()
        prepared = prepare_inputs(program, given)
        for tensor in program.tensors:
            hbm.allocate(tensor)
            if tensor.name in prepared:
                hbm.store(tensor.name, prepared[tensor.name])
        cores.append(FunctionalCore(target, hbm))
    group_of = {row: g for g, members in enumerate(groups) for row in members}
    executed: set[int] = set()
    for row_number in order:
        row = rows[int(row_number)]
        if not row.instr.spec().collective:
            cores[row.core].execute(row.instr)
            continue
        group = group_of[int(row_number)]
        if group in executed:
            continue
        executed.add(group)
        members = [rows[m] for m in groups[group]]
        values = [{name: cores[m.core].read(ap) for name, ap in m.instr.reads().items()}
                  for m in members]
        results = members[0].instr.spec().semantics([m.instr for m in members], values)
        for member, result in zip(members, results):
            cores[member.core].write_results(member.instr, result)
    for core in cores:
        core.settle()
    return {ranks[k]: {t.name: core.hbm.load(t.name) for t in program.tensors
                       if t.kind == "output"}
            for k, (program, core) in enumerate(zip(programs, cores))}

