"""Plots where a picture beats a table: systolic-array frames, run timelines, the roofline.

Every function draws on its own `matplotlib.figure.Figure` with the Agg canvas (no pyplot, no
global backend switch) and imports matplotlib only when called, so the emulator imports without
it (`pip install ncemu[plot]`).  The timeline reads either a `Schedule` or the Chrome/Perfetto
trace `report.chrome_trace` writes; the roofline follows Williams, Waterman and Patterson,
"Roofline", CACM 52(4), 2009, with the machine's ceilings from its presets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emulator.machine import ChipSpec, CoreSpec
from emulator.report import Report
from emulator.systolic import Frame, SystolicArray
from emulator.teaching import ROLES, FoldTiming, frame_header
from emulator.timing import COMPUTE, SIGNAL, WAIT, Schedule
from isa.target import Engine, stream_engine

# Colours of a PE box: did a MAC this cycle, is having its held tile loaded, or idle.
PE_COLOURS = {"mac": "#ffc36b", "load": "#a8d4f5", "idle": "#f4f4f4"}
DPI = 100


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError("plots need matplotlib >= 3.7: pip install 'ncemu[plot]'") from None


def _figure(width_in: float, height_in: float):
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


# ---- systolic array frames ---------------------------------------------------------------------


def _value(value: float, values: str) -> str:
    return f"{value:.0f}" if values == "int" else f"{value:.2f}"


def _systolic_figure(array: SystolicArray):
    figure = _figure(max(1.3 * (array.cols + 3.4), 7.0), 1.1 * (array.rows + 1.9) + 0.7)
    axes = figure.add_axes((0.02, 0.06, 0.96, 0.86))
    return figure, axes


def _draw_systolic(figure, axes, array: SystolicArray, frame: Frame, timing: FoldTiming,
                   last_cycle: int, folds: int, values: str) -> None:
    """One frame: PE boxes with their registers, arrows with the values crossing each edge."""
    roles = ROLES[array.dataflow]
    axes.clear()
    axes.set_xlim(-1.7, array.cols + 1.7)
    axes.set_ylim(array.rows + 1.0, -0.9)  # row 0 at the top, as in the text view
    axes.set_axis_off()
    for text in list(figure.texts):
        text.remove()
    planes = {"stationary": (roles.stationary, frame.stationary),
              "moving": (roles.moving, frame.moving), "psum": (roles.psum, frame.psum)}
    order = [roles.held] + [name for name in planes if name != roles.held]
    loading_rows = timing.k_range[1] - timing.k_range[0] + 1
    arrow = {"arrowstyle": "-|>", "color": "#444444", "lw": 1.2}
    from matplotlib.patches import Rectangle

    for r in range(array.rows):
        for c in range(array.cols):
            state = ("mac" if frame.mac[r, c] else
                     "load" if frame.phase == "load" and r < loading_rows else "idle")
            axes.add_patch(Rectangle((c + 0.06, r + 0.06), 0.88, 0.88, facecolor=PE_COLOURS[state],
                                     edgecolor="#333333", lw=1.0))
            if frame.mac[r, c]:
                k, m, n = frame.mac_index[r, c]
                axes.text(c + 0.5, r + 0.2, f"k{k} m{m} n{n}", ha="center", va="center",
                          fontsize=7, color="#7a3e00", weight="bold")
            registers = "\n".join(f"{planes[name][0]} {_value(planes[name][1][r, c], values)}"
                                  for name in order)
            axes.text(c + 0.5, r + 0.6, registers, ha="center", va="center", fontsize=8,
                      family="monospace", linespacing=1.35)
    for r in range(array.rows):
        if frame.left_in_valid[r]:
            axes.annotate("", xy=(0.06, r + 0.5), xytext=(-0.5, r + 0.5), arrowprops=arrow)
            axes.text(-0.55, r + 0.5, f"{roles.left_in} {_value(frame.left_in[r], values)}",
                      ha="right", va="center", fontsize=8)
        if frame.right_out_valid[r]:
            x = array.cols - 0.06
            axes.annotate("", xy=(x + 0.5, r + 0.5), xytext=(x, r + 0.5), arrowprops=arrow)
            axes.text(x + 0.55, r + 0.5, f"{roles.right_out} {_value(frame.right_out[r], values)}",
                      ha="left", va="center", fontsize=8)
    for c in range(array.cols):
        if frame.top_in_valid[c]:
            axes.annotate("", xy=(c + 0.5, 0.06), xytext=(c + 0.5, -0.45), arrowprops=arrow)
            axes.text(c + 0.5, -0.5, f"{roles.top_in[frame.phase]} "
                      f"{_value(frame.top_in[c], values)}", ha="center", va="bottom", fontsize=8)
        if frame.bottom_out_valid[c]:
            y = array.rows - 0.06
            axes.annotate("", xy=(c + 0.5, y + 0.45), xytext=(c + 0.5, y), arrowprops=arrow)
            label = f"{roles.bottom_out[frame.phase]} {_value(frame.bottom_out[c], values)}"
            m, n = frame.out_index[c]
            if m >= 0:
                label += f"\nout[{m},{n}]"
            axes.text(c + 0.5, y + 0.5, label, ha="center", va="top", fontsize=8,
                      color="#0b5394" if m >= 0 else "black")
    figure.text(0.5, 0.97, f"{array.dataflow} {array.rows}x{array.cols}  "
                + frame_header(frame, timing, last_cycle, folds),
                ha="center", va="top", fontsize=9, weight="bold")
    figure.text(0.5, 0.02, roles.legend + "   (orange: MAC this cycle, blue: loading)",
                ha="center", va="bottom", fontsize=7.5)


def systolic_gif(array: SystolicArray, frames: list[Frame], timings: list[FoldTiming],
                 path: str | Path, fps: float = 2.0, values: str = "int") -> Path:
    """All frames as an animated GIF (matplotlib's PillowWriter), one image per cycle."""
    _require_matplotlib()
    from matplotlib.animation import PillowWriter

    if fps <= 0:
        raise ValueError(f"fps {fps} must be > 0")
    if not frames:
        raise ValueError("no frames to animate")
    path = Path(path)
    figure, axes = _systolic_figure(array)
    last = frames[-1].cycle
    writer = PillowWriter(fps=fps)
    with writer.saving(figure, str(path), DPI):
        for frame in frames:
            _draw_systolic(figure, axes, array, frame, timings[frame.fold], last, len(timings),
                           values)
            writer.grab_frame()
    return path


def systolic_pngs(array: SystolicArray, frames: list[Frame], timings: list[FoldTiming],
                  directory: str | Path, values: str = "int") -> list[Path]:
    """One PNG per frame, `cycle_0000.png` ..., in `directory` (created if missing)."""
    if not frames:
        raise ValueError("no frames to draw")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figure, axes = _systolic_figure(array)
    last = frames[-1].cycle
    paths = []
    for frame in frames:
        _draw_systolic(figure, axes, array, frame, timings[frame.fold], last, len(timings),
                       values)
        paths.append(directory / f"cycle_{frame.cycle:04d}.png")
        figure.savefig(paths[-1])
    return paths


# ---- timeline of a run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Busy:
    """One timed instruction on one stream: its opcode and [start, end) in ns."""

    stream: str
    opcode: str
    start_ns: float
    end_ns: float


def _from_schedule(schedule: Schedule) -> tuple[str, list[str], list[Busy]]:
    encoded = schedule.encoded
    program = encoded.program
    intervals = []
    for k, name in enumerate(encoded.streams):
        first = encoded.stream_first[k]
        for index, instr in enumerate(program.streams[k].instructions):
            row = first + index
            if encoded.kind[row] in (WAIT, SIGNAL):
                continue  # they take no engine time
            if encoded.kind[row] == COMPUTE:  # the engine is occupied for its busy time
                end = schedule.start_ns[row] + encoded.busy_ns[row] + schedule.delay_ns[row]
            else:  # transfers (DMA, collectives) last until they complete, as in the trace
                end = schedule.end_ns[row]
            intervals.append(Busy(name, instr.opcode, float(schedule.start_ns[row]), float(end)))
    return program.name, list(encoded.streams), intervals


def _from_trace(trace: dict) -> tuple[str, list[str], list[Busy]]:
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        raise ValueError("not a Chrome/Perfetto trace: no 'traceEvents' list")
    events = trace["traceEvents"]
    names, order, title = {}, {}, "run"
    for event in events:
        if event.get("ph") != "M":
            continue
        if event.get("name") == "thread_name":
            names[event["tid"]] = event["args"]["name"]
        elif event.get("name") == "thread_sort_index":
            order[event["tid"]] = event["args"]["sort_index"]
        elif event.get("name") == "process_name":
            title = event["args"]["name"]
    intervals = []
    for event in events:
        if event.get("ph") != "X":
            continue
        if event.get("tid") not in names:
            raise ValueError(f"trace event {event.get('name')!r} on track {event.get('tid')} "
                             f"has no thread_name metadata")
        start = float(event["ts"]) * 1e3  # trace times are microseconds
        intervals.append(Busy(names[event["tid"]], str(event["name"]), start,
                              start + float(event["dur"]) * 1e3))
    streams = [names[tid] for tid in sorted(names, key=lambda tid: (order.get(tid, tid), tid))]
    return title, streams, intervals


def _merged(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of [start, end) intervals (at least one) as disjoint sorted intervals."""
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], np.maximum.accumulate(ends[order])
    # A new run begins where an interval starts after everything before it has ended.
    begins = np.concatenate(([True], starts[1:] > ends[:-1]))
    run = np.cumsum(begins) - 1
    out_ends = np.zeros(run[-1] + 1)
    np.maximum.at(out_ends, run, ends)
    return starts[begins], out_ends


def busy_fraction(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fraction of each bin [edges[i], edges[i+1]) covered by the union of the intervals."""
    starts, ends, edges = (np.asarray(a, float) for a in (starts, ends, edges))
    if starts.shape != ends.shape or np.any(ends < starts):
        raise ValueError("intervals need as many ends as starts, each end >= its start")
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bin edges must increase strictly, got {edges}")
    if starts.size == 0:
        return np.zeros(edges.size - 1)
    starts, ends = _merged(starts, ends)
    # Covered time up to t: sum over intervals of clip(t - start, 0, end - start).
    cum_len = np.concatenate(([0.0], np.cumsum(ends - starts)))
    started = np.searchsorted(starts, edges, side="right")
    finished = np.searchsorted(ends, edges, side="right")
    partial = np.where(started > finished, edges - starts[np.maximum(started - 1, 0)], 0.0)
    covered = cum_len[finished] + partial
    return np.diff(covered) / np.diff(edges)


def _stream_key(stream: str) -> tuple[int, int]:
    """Engines in the order `Engine` lists them, then DMA queues by number."""
    engine = stream_engine(stream)
    return list(Engine).index(engine), int(stream[3:]) if engine is Engine.DMA else 0


def _engine_label(stream: str) -> str:
    engine = stream_engine(stream)
    return "dma" if engine is Engine.DMA else engine.value


def timeline_plot(schedule_or_trace: Schedule | Report | dict, path: str | Path,
                  bins: int = 200) -> Path:
    """Engine utilisation over time (binned) above a Gantt chart of every stream's instructions.

    Takes a `Schedule`, a `Report` (its schedule) or a trace dict from `chrome_trace`.  The DMA
    line is the mean over the DMA queues that moved data; a queue's transfers may overlap (it
    prepares the next while one streams), so its busy time is the union of its transfers.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins={bins!r} must be an int >= 1")
    if isinstance(schedule_or_trace, Report):
        if schedule_or_trace.schedule is None:
            raise ValueError(f"report of {schedule_or_trace.program} has no single-core "
                             f"schedule; pass one core's Schedule or its trace")
        schedule_or_trace = schedule_or_trace.schedule
    if isinstance(schedule_or_trace, Schedule):
        title, streams, intervals = _from_schedule(schedule_or_trace)
    elif isinstance(schedule_or_trace, dict):
        title, streams, intervals = _from_trace(schedule_or_trace)
    else:
        raise TypeError(f"timeline_plot takes a Schedule, Report or trace dict, got "
                        f"{type(schedule_or_trace).__name__}")
    if not intervals:
        raise ValueError(f"{title}: no timed instructions to draw")
    latency = max(b.end_ns for b in intervals)
    edges = np.linspace(0.0, latency, bins + 1)
    centres_us = (edges[:-1] + edges[1:]) / 2e3

    by_stream: dict[str, list[Busy]] = {name: [] for name in sorted(streams, key=_stream_key)}
    for busy in intervals:
        by_stream.setdefault(busy.stream, []).append(busy)
    engines: dict[str, list[np.ndarray]] = {}
    for name, items in by_stream.items():
        if not items:
            continue
        fraction = busy_fraction(np.array([b.start_ns for b in items]),
                                 np.array([b.end_ns for b in items]), edges)
        engines.setdefault(_engine_label(name), []).append(fraction)

    rows = list(by_stream)
    figure = _figure(12.0, 3.2 + 0.28 * len(rows))
    grid = figure.add_gridspec(2, 1, height_ratios=(2.4, 0.3 * len(rows) + 0.6), hspace=0.08)
    utilisation = figure.add_subplot(grid[0])
    gantt = figure.add_subplot(grid[1], sharex=utilisation)
    for name, fractions in engines.items():
        label = (f"dma (mean of {len(fractions)} queues)" if name == "dma" else name)
        utilisation.step(centres_us, 100 * np.mean(fractions, axis=0), where="mid", label=label,
                         lw=1.4)
    utilisation.set_ylim(-2, 105)
    utilisation.set_ylabel(f"busy % ({latency / bins:.0f} ns bins)")
    utilisation.set_title(f"{title}: {latency / 1e3:.3f} us", fontsize=11)
    utilisation.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                       title="engine", title_fontsize=8)
    utilisation.grid(alpha=0.3)
    utilisation.tick_params(labelbottom=False)

    from matplotlib import colormaps
    opcodes = sorted({b.opcode for b in intervals})
    palette = colormaps["tab10" if len(opcodes) <= 10 else "tab20"]
    colours = {op: palette(i % palette.N) for i, op in enumerate(opcodes)}
    for y, name in enumerate(rows):
        for opcode in opcodes:
            bars = [(b.start_ns / 1e3, (b.end_ns - b.start_ns) / 1e3) for b in by_stream[name]
                    if b.opcode == opcode]
            if bars:
                gantt.broken_barh(bars, (y - 0.4, 0.8), facecolors=colours[opcode],
                                  edgecolor="white", linewidth=0.3, alpha=0.9)
    gantt.set_yticks(range(len(rows)), rows, fontsize=8)
    gantt.set_ylim(len(rows) - 0.5, -0.5)
    gantt.set_xlim(0, latency / 1e3)
    gantt.set_xlabel("time (us)")
    gantt.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch
    gantt.legend(handles=[Patch(color=colours[op], label=op) for op in opcodes],
                 loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="opcode",
                 title_fontsize=8)
    path = Path(path)
    figure.savefig(path, bbox_inches="tight")
    return path


# ---- roofline -----------------------------------------------------------------------------------


def roofline_plot(report: Report, spec: CoreSpec, chip: ChipSpec, path: str | Path) -> Path:
    """The run's achieved FLOP/s against its arithmetic intensity, under the machine's roofs:
    TensorE peak (bf16), the chip's HBM bandwidth and the core's DMA engines together."""
    if report.arithmetic_intensity is None:
        raise ValueError(f"{report.program} moved no HBM bytes: its arithmetic intensity is "
                         f"undefined and it has no place on a roofline")
    if report.latency_ns <= 0:
        raise ValueError(f"{report.program} has latency {report.latency_ns} ns; need > 0")
    peak = spec.tensor_peak_flops
    # Bandwidths are bytes/ns in the presets: x 1e9 gives bytes/s.
    roofs = (
        (f"HBM {chip.hbm_gbps:.0f} GB/s ({chip.name})", chip.hbm_gbps * 1e9, "#1f77b4"),
        (f"DMA {spec.dma_engines} x {spec.dma_engine_gbps:g} GB/s = "
         f"{spec.dma_engines * spec.dma_engine_gbps:.0f} GB/s",
         spec.dma_engines * spec.dma_engine_gbps * 1e9, "#2ca02c"),
    )
    intensity = float(report.arithmetic_intensity)
    achieved = report.flops / (report.latency_ns * 1e-9)
    ridges = [peak / bandwidth for _, bandwidth, _ in roofs]
    low = min(intensity, *ridges) / 30
    high = max(intensity, *ridges) * 30
    x = np.geomspace(low, high, 400)

    figure = _figure(8.0, 5.6)
    axes = figure.add_subplot()
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.axhline(peak, color="#d62728", lw=1.2, ls=":")
    # Ridge labels alternate above-left and below-right so that close ridges stay readable.
    placements = (((-6, 6), "right"), ((6, -14), "left"))
    for index, ((label, bandwidth, colour), ridge) in enumerate(zip(roofs, ridges)):
        axes.plot(x, np.minimum(peak, x * bandwidth), color=colour, lw=2, label=label)
        axes.plot([ridge], [peak], marker="o", color=colour, ms=4)
        offset, align = placements[index % 2]
        axes.annotate(f"ridge {ridge:.0f} FLOP/B", (ridge, peak), textcoords="offset points",
                      xytext=offset, ha=align, fontsize=8, color=colour)
    axes.annotate(f"TensorE peak (bf16) {peak / 1e12:.1f} TFLOP/s", (high, peak),
                  textcoords="offset points", xytext=(-4, 8), ha="right", fontsize=9,
                  color="#d62728")
    axes.plot([intensity], [achieved], marker="*", ms=16, color="#ff7f0e", mec="black",
              label="this run", zorder=5)
    axes.annotate(f"{report.program}\n{intensity:.1f} FLOP/B, {achieved / 1e12:.2f} TFLOP/s "
                  f"({100 * achieved / peak:.1f}% of peak)", (intensity, achieved),
                  textcoords="offset points", xytext=(10, -28), fontsize=8,
                  bbox={"boxstyle": "round", "fc": "white", "ec": "#999999"})
    axes.set_xlim(low, high)
    axes.set_ylim(min(achieved, *(low * bandwidth for _, bandwidth, _ in roofs)) / 3, peak * 3)
    axes.set_xlabel("arithmetic intensity (FLOP per HBM byte)")
    axes.set_ylabel("FLOP/s")
    axes.set_title(f"roofline: {report.machine}, {report.latency_ns / 1e3:.3f} us", fontsize=11)
    axes.grid(which="both", alpha=0.25)
    axes.legend(loc="lower right", fontsize=8)
    path = Path(path)
    figure.savefig(path, bbox_inches="tight")
    return path
