"""Reports of a timed run: per-engine time and utilisation, memory traffic, FLOPs, trace.

`Report.to_json()` follows the documented schema "ncemu.report/1" (docs/report-schema.md):
latency_ns, cores[] (engines -> busy_ns, cycles, utilization, instructions, flops; memory ->
HBM/SBUF/PSUM read/write bytes and DMA bytes), tensor_hfu and arithmetic_intensity.
`chrome_trace()` gives Chrome/Perfetto `traceEvents` JSON with one track per engine and DMA queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emulator.machine import CoreSpec
from emulator.timing import COLLECTIVE, DMA, SIGNAL, WAIT, EncodedProgram, Schedule
from isa.instructions import DmaCopy, Signal, Wait
from isa.target import Engine, stream_engine

SCHEMA = "ncemu.report/1"
MEMORY_KEYS = ("hbm_read_bytes", "hbm_write_bytes", "sbuf_read_bytes", "sbuf_write_bytes",
               "psum_read_bytes", "psum_write_bytes", "dma_bytes")


@dataclass
class EngineStats:
    """Time an engine (or the DMA queues together) spent working during a run."""

    busy_ns: float
    cycles: float | None  # at the engine's own clock; DMA has none
    utilization: float
    instructions: int
    flops: int


@dataclass
class CoreReport:
    engines: dict[str, EngineStats]
    memory: dict[str, int]
    queues: dict[str, EngineStats]


@dataclass
class Report:
    """Everything measured about one timed run of a program on one core."""

    program: str
    machine: str
    latency_ns: float
    cores: list[CoreReport]
    tensor_hfu: float
    arithmetic_intensity: float | None
    schedule: Schedule | None = field(repr=False)
    chips: list[dict] = field(default_factory=list)  # multi-core runs: per-chip totals
    links: dict[str, float] = field(default_factory=dict)  # bytes per NeuronLink direction

    @property
    def flops(self) -> int:
        return sum(e.flops for c in self.cores for e in c.engines.values())

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "program": self.program,
            "machine": self.machine,
            "latency_ns": self.latency_ns,
            "cores": [{"engines": {n: vars(e) for n, e in c.engines.items()},
                       "memory": dict(c.memory),
                       "dma_queues": {n: vars(e) for n, e in c.queues.items()}}
                      for c in self.cores],
            "tensor_hfu": self.tensor_hfu,
            "arithmetic_intensity": self.arithmetic_intensity,
            **({"chips": self.chips, "links": self.links} if self.chips else {}),
        }

    def text(self) -> str:
        lines = [f"{self.program} on {self.machine}: latency {self.latency_ns / 1e3:.3f} us",
                 f"  TensorE HFU {100 * self.tensor_hfu:.1f}%   FLOPs {self.flops:.4g}   "
                 f"arithmetic intensity "
                 + (f"{self.arithmetic_intensity:.1f} FLOP/B" if self.arithmetic_intensity
                    is not None else "n/a (no HBM traffic)")]
        for k, core in enumerate(self.cores):
            lines.append(f"  core {k}  {'engine':<8}{'busy us':>10}{'cycles':>12}{'util':>8}"
                         f"{'instr':>8}{'FLOPs':>12}")
            for name, e in core.engines.items():
                cycles = f"{e.cycles:.0f}" if e.cycles is not None else "-"
                lines.append(f"          {name:<8}{e.busy_ns / 1e3:>10.3f}{cycles:>12}"
                             f"{100 * e.utilization:>7.1f}%{e.instructions:>8}{e.flops:>12.4g}")
            mem = core.memory
            lines.append("          memory: " + "  ".join(
                f"{key.replace('_bytes', '')} {_bytes(mem[key])}" for key in MEMORY_KEYS))
        for chip in self.chips:
            lines.append(f"  chip {chip['chip']}: cores {chip['cores']}, TensorE busy "
                         f"{chip['tensor_busy_ns'] / 1e3:.3f} us, HBM "
                         f"{_bytes(chip['hbm_bytes'])}")
        for link, nbytes in self.links.items():
            lines.append(f"  NeuronLink {link}: {_bytes(nbytes)}")
        return "\n".join(lines)

    def chrome_trace(self) -> dict:
        return chrome_trace(self.schedule)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _union_ns(starts: np.ndarray, ends: np.ndarray) -> float:
    """Length of the union of [start, end) intervals."""
    if starts.size == 0:
        return 0.0
    order = np.argsort(starts, kind="stable")
    total, cur_start, cur_end = 0.0, starts[order[0]], ends[order[0]]
    for i in order[1:]:
        if starts[i] > cur_end:
            total += cur_end - cur_start
            cur_start, cur_end = starts[i], ends[i]
        else:
            cur_end = max(cur_end, ends[i])
    return float(total + cur_end - cur_start)


def memory_traffic(encoded: EncodedProgram) -> dict[str, int]:
    """Bytes each memory reads and writes, implied by the instructions' operands."""
    traffic = dict.fromkeys(MEMORY_KEYS, 0)
    # Programs repeat a few instructions many times: size each distinct one once.
    repeats = np.bincount(encoded.fact_index, minlength=len(encoded.fact_records))
    for instr, times in zip(encoded.fact_records, repeats.tolist()):
        if instr is None:  # waits and signals
            continue
        for ap in instr.reads().values():
            traffic[f"{ap.space.value}_read_bytes"] += ap.nbytes * times
        for ap in instr.writes().values():
            traffic[f"{ap.space.value}_write_bytes"] += ap.nbytes * times
        if isinstance(instr, DmaCopy):
            traffic["dma_bytes"] += instr.src.nbytes * times
    return traffic


def core_report(schedule: Schedule, spec: CoreSpec, latency: float) -> tuple[CoreReport, int]:
    """Engine and memory figures of one core's schedule, utilisation relative to `latency`;
    also returns the core's TensorE FLOPs."""
    encoded = schedule.encoded
    engines: dict[str, EngineStats] = {}
    queues: dict[str, EngineStats] = {}
    tensor_flops = 0
    dma_starts, dma_ends, dma_count = [], [], 0
    # Cycles and FLOPs of each distinct instruction, gathered per row.
    fact_cycles = np.array([0.0 if c is None else c.busy for c in encoded.fact_costs])
    fact_flops = np.array([0 if c is None else c.flops for c in encoded.fact_costs], np.int64)
    synchronising = (encoded.kind == WAIT) | (encoded.kind == SIGNAL)
    for k, name in enumerate(encoded.streams):
        first, last = encoded.stream_first[k], encoded.stream_first[k + 1]
        real = first + np.flatnonzero(~synchronising[first:last])
        engine = stream_engine(name)
        if engine is Engine.DMA:
            starts, ends = schedule.start_ns[real], schedule.end_ns[real]
            busy = _union_ns(starts, ends)
            queues[name] = EngineStats(busy, None, busy / latency if latency else 0.0,
                                       len(real), 0)
            dma_starts.append(starts)
            dma_ends.append(ends)
            dma_count += len(real)
            continue
        clock = spec.clock_ghz(engine)
        delay = float(schedule.delay_ns[real].sum())
        busy = float(encoded.busy_ns[real].sum()) + delay
        cycles = float(fact_cycles[encoded.fact_index[real]].sum()) + delay * clock
        flops = int(fact_flops[encoded.fact_index[real]].sum())
        if engine is Engine.TENSOR:
            tensor_flops += flops
        engines[name] = EngineStats(busy, cycles, busy / latency if latency else 0.0, len(real),
                                    flops)
    if dma_starts:
        busy = _union_ns(np.concatenate(dma_starts), np.concatenate(dma_ends))
        engines["dma"] = EngineStats(busy, None, busy / latency if latency else 0.0, dma_count, 0)
    return CoreReport(engines, memory_traffic(encoded), queues), tensor_flops


def build_report(schedule: Schedule, spec: CoreSpec) -> Report:
    latency = schedule.latency_ns
    core, tensor_flops = core_report(schedule, spec, latency)
    hbm = core.memory["hbm_read_bytes"] + core.memory["hbm_write_bytes"]
    total_flops = sum(e.flops for e in core.engines.values())
    hfu = tensor_flops / (latency * 1e-9 * spec.tensor_peak_flops) if latency else 0.0
    return Report(schedule.encoded.program.name, spec.name, latency, [core], hfu,
                  total_flops / hbm if hbm else None, schedule)


def chrome_trace(schedule: Schedule, core: int = 0) -> dict:
    """Chrome/Perfetto trace: process = core, one thread (track) per engine and DMA queue."""
    encoded = schedule.encoded
    program = encoded.program
    events = [{"name": "process_name", "ph": "M", "pid": core, "tid": 0,
               "args": {"name": f"core {core}: {program.name}"}}]
    for k, name in enumerate(encoded.streams):
        events.append({"name": "thread_name", "ph": "M", "pid": core, "tid": k + 1,
                       "args": {"name": name}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": core, "tid": k + 1,
                       "args": {"sort_index": k}})
        first = encoded.stream_first[k]
        for index, instr in enumerate(program.streams[k].instructions):
            row = first + index
            start = schedule.start_ns[row]
            if isinstance(instr, (Wait, Signal)):
                events.append({"name": str(instr), "ph": "i", "s": "t", "pid": core,
                               "tid": k + 1, "ts": start / 1e3})
                continue
            if encoded.kind[row] in (DMA, COLLECTIVE):
                duration = schedule.end_ns[row] - start
            else:
                duration = encoded.busy_ns[row] + schedule.delay_ns[row]
            args = {name: str(ap) for name, ap in instr.operand_fields().items()}
            args["bytes"] = int(sum(ap.nbytes for ap in instr.operand_fields().values()))
            args["index"] = index
            args["complete_ns"] = float(schedule.end_ns[row])
            events.append({"name": instr.opcode, "ph": "X", "pid": core, "tid": k + 1,
                           "ts": start / 1e3, "dur": duration / 1e3, "args": args})
    return {"traceEvents": events, "displayTimeUnit": "ns"}

