"""Layout sweeps of library kernels (tiles, variants, blocking, buffering) on Inf1 and Inf2.

Each study fixes one problem and times every layout of its grid, timing-only (kernels traced
from shapes, no data), on one NeuronCore of each machine (inf1.xlarge: NeuronCore-v1, 0.49 GHz
TensorE, 50 GiB/s device DRAM, 80 KiB SBUF partitions; inf2.xlarge: NeuronCore-v2, 2.8 GHz,
820 GB/s HBM, 192 KiB).  The studies:

* matmul, M = N = K = 1024 bf16: the four steps of the library's progression (naive, hoisted,
  blocked, fully blocked) over their tile and block sizes, and the hand-scheduled tiled matmul
  over its moving tile and PSUM buffering depth;
* conv2d (implicit GEMM), 128 -> 128 channels, 3x3 on 56x56, padding 1: output pixels per matmul;
* attention (flash), 4 heads, 2048 tokens, head size 128: keys per tile;
* layernorm, 2048 x 2048: bn_stats/bn_aggr vs plain reductions, and the engine applying rstd;
* softmax, 2048 x 2048: reciprocal-then-multiply vs divide.

Every grid is a sweep spec (`emulator.sweep.parse_spec`) over the workloads `lib.NAME` and
`matmul` of `emulator.workloads`; all of them run as one sweep (`run_sweep`: a process pool, rows
streamed to a CSV).  For each kernel x machine the suite prints the best configuration, the
spread (worst / best latency) and, per parameter and value, the best latency reachable with it
(and that point's TensorE utilisation); it writes the same as JSON, and one PNG per kernel of
latency and TensorE utilisation against each parameter, a line per machine.

    python -m benchmarks.layouts [--quick] [--json FILE] [--plots DIR] [--csv FILE]
                                 [--machines inf1.xlarge,inf2.xlarge] [--workers N] [--resume]

Defaults: benchmarks/results/layouts.json, .csv and benchmarks/results/layouts/ (with --quick,
a small grid for tests: layouts-quick.json, .csv and layouts-quick/).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from emulator.sweep import Point, SweepSpec, default_workers, load_results, parse_spec, run_sweep
from emulator.workloads import Value, workload

RESULTS = Path(__file__).resolve().parent / "results"
MACHINES = ("inf1.xlarge", "inf2.xlarge")
SCHEMA = "ncemu.bench.layouts/1"
VARIANT = "variant"  # the pseudo-parameter naming a study's workloads


@dataclass(frozen=True)
class Grid:
    """One sub-grid of a study: workloads that share its axes (one sweep spec)."""

    workloads: tuple[str, ...]
    shape: Mapping[str, Value]  # one value each: a study compares layouts of one problem
    layout: Mapping[str, tuple[Value, ...]]


@dataclass(frozen=True)
class Study:
    """One kernel's layouts: its grids, compared together, and a label per workload."""

    kernel: str
    problem: str
    variants: Mapping[str, str]  # workload -> label in tables and plots
    grids: tuple[Grid, ...]

    def __post_init__(self) -> None:
        unlabelled = sorted({w for g in self.grids for w in g.workloads} - set(self.variants))
        if unlabelled:
            raise ValueError(f"study {self.kernel}: workloads {unlabelled} have no label")

    def labels(self) -> list[str]:
        """The variants' labels, each once, in grid order."""
        return list(dict.fromkeys(self.variants[w] for g in self.grids for w in g.workloads))

    def specs(self, machines: Sequence[str]) -> list[SweepSpec]:
        """Each grid as a checked sweep spec (unknown or illegal values raise naming the key)."""
        return [parse_spec({"sweep": {
            "name": f"layouts-{self.kernel}-{i}", "workload": list(grid.workloads),
            "machines": list(machines), "shape": {k: [v] for k, v in grid.shape.items()},
            "layout": {k: list(v) for k, v in grid.layout.items()}}})
            for i, grid in enumerate(self.grids)]


_MATMUL_VARIANTS = {"lib.matmul_naive": "naive", "lib.matmul_hoisted": "hoisted",
                    "lib.matmul_blocked": "blocked", "lib.matmul": "fully blocked",
                    "matmul": "hand-scheduled"}
_LAYERNORM_VARIANTS = {"lib.layernorm": "bn_stats", "lib.layernorm_naive": "reductions"}


def _matmul(size: int, tiles: tuple[int, ...], tile_n: tuple[int, ...],
            blocks_m: tuple[int, ...], blocks_n: tuple[int, ...], blocks_k: tuple[int, ...],
            buffers: tuple[int, ...]) -> Study:
    shape = {"M": size, "N": size, "K": size, "dtype": "bf16"}
    full_tiles = {"TILE_M": (128,), "TILE_K": (128,), "TILE_N": tile_n}
    return Study("matmul", f"M=N=K={size} bf16", _MATMUL_VARIANTS, (
        Grid(("lib.matmul_naive", "lib.matmul_hoisted"), shape,
             {"TILE_M": tiles, "TILE_K": tiles, "TILE_N": tile_n}),
        Grid(("lib.matmul_blocked",), shape,
             {"TILES_IN_BLOCK_M": blocks_m, "TILES_IN_BLOCK_N": blocks_n, **full_tiles}),
        Grid(("lib.matmul",), shape,
             {"TILES_IN_BLOCK_M": blocks_m, "TILES_IN_BLOCK_N": blocks_n,
              "TILES_IN_BLOCK_K": blocks_k, **full_tiles}),
        Grid(("matmul",), {"m": size, "k": size, "n": size, "dtype": "bf16"},
             {"tile_n": tile_n, "buffers": buffers})))


def _rowwise(rows: int, cols: int) -> tuple[Study, Study]:
    shape = {"rows": rows, "cols": cols, "dtype": "bf16"}
    return (Study("layernorm", f"{rows}x{cols} bf16", _LAYERNORM_VARIANTS, (
                Grid(tuple(_LAYERNORM_VARIANTS), shape,
                     {"APPLY_ENGINE": ("vector", "scalar")}),)),
            Study("softmax", f"{rows}x{cols} bf16", {"lib.softmax": "softmax"}, (
                Grid(("lib.softmax",), shape, {"NORMALIZE": ("reciprocal", "divide")}),)))


def _conv2d(channels: int, size: int, tile_n: tuple[int, ...]) -> Study:
    shape = {"batch": 1, "c_in": channels, "c_out": channels, "height": size, "width": size,
             "kernel_h": 3, "kernel_w": 3, "padding": 1, "dtype": "bf16"}
    return Study("conv2d", f"{channels}->{channels} channels, 3x3 on {size}x{size}, padding 1, "
                           f"bf16", {"lib.conv2d": "conv2d"},
                 (Grid(("lib.conv2d",), shape, {"TILE_N": tile_n}),))


def _attention(heads: int, seq: int, head_dim: int, kv_tile: tuple[int, ...]) -> Study:
    shape = {"batch": 1, "heads": heads, "seq": seq, "head_dim": head_dim, "dtype": "bf16"}
    return Study("attention", f"{heads} heads x {seq} tokens, head size {head_dim}, bf16",
                 {"lib.attention": "attention"},
                 (Grid(("lib.attention",), shape, {"KV_TILE": kv_tile}),))


def studies(quick: bool = False) -> tuple[Study, ...]:
    """The suite's studies: the full grids, or (quick) a few points each for tests."""
    if quick:
        return (_matmul(512, (128,), (256, 512), (1, 2), (1,), (1, 2), (1, 2)),
                _conv2d(64, 16, (128, 256)), _attention(1, 256, 64, (128, 256)),
                *_rowwise(256, 512))
    return (_matmul(1024, (32, 64, 128), (128, 256, 512), (1, 2, 4, 8), (1, 2), (1, 2, 4, 8),
                    (1, 2, 4, 8)),
            _conv2d(128, 56, (64, 128, 256, 512)), _attention(4, 2048, 128, (128, 256, 512)),
            *_rowwise(2048, 2048))


@dataclass(frozen=True)
class SuiteSpec(SweepSpec):
    """Several sweep specs run as one sweep (one process pool, one results file): the points of
    every part, each once.  The base fields hold the union of the parts' workloads and machines
    (so `columns()` covers every parameter); the axes live in the parts."""

    parts: tuple[SweepSpec, ...] = ()

    @classmethod
    def of(cls, name: str, parts: Sequence[SweepSpec]) -> SuiteSpec:
        workloads = tuple(dict.fromkeys(w for part in parts for w in part.workloads))
        machines = {m: i for part in parts for m, i in part.machines.items()}
        digests = {m: d for part in parts for m, d in part.machine_digests.items()}
        return cls(name, workloads, machines, digests, {}, {}, tuple(parts))

    def points(self) -> list[Point]:
        points: dict[str, Point] = {}
        for part in self.parts:
            for point in part.points():
                points.setdefault(point.id, point)
        return list(points.values())


# ---- reading the results ---------------------------------------------------------------------
def _layout_of(row: Mapping[str, object]) -> dict[str, Value]:
    return {p.name: row[p.name] for p in workload(str(row["workload"])).layout}


def _config(study: Study, row: Mapping[str, object]) -> str:
    layout = " ".join(f"{k}={v}" for k, v in _layout_of(row).items())
    return f"{study.variants[str(row['workload'])]}: {layout}"


def _point_summary(study: Study, row: Mapping[str, object]) -> dict:
    return {"config": _config(study, row), "workload": row["workload"],
            "variant": study.variants[str(row["workload"])], "layout": _layout_of(row),
            "status": row["status"], "latency_ns": row["latency_ns"],
            "tensor_hfu": row["tensor_hfu"], "instructions": row["instructions"],
            "hbm_read_bytes": row["hbm_read_bytes"], "error": row["error"] or None}


def _swept(study: Study) -> list[str]:
    """The parameters a study varies, in grid order: the variant first when there are several."""
    names = [VARIANT] if len(study.labels()) > 1 else []
    for grid in study.grids:
        names += [k for k, values in grid.layout.items() if len(values) > 1 and k not in names]
    return names


def _value(study: Study, row: Mapping[str, object], parameter: str) -> Value | None:
    if parameter == VARIANT:
        return study.variants[str(row["workload"])]
    names = {p.name for p in workload(str(row["workload"])).layout}
    return row[parameter] if parameter in names else None


def _values(study: Study, parameter: str) -> list[Value]:
    if parameter == VARIANT:
        return list(study.labels())
    found: list[Value] = []
    for grid in study.grids:
        found += [v for v in grid.layout.get(parameter, ()) if v not in found]
    return found


def summarise(study: Study, rows: list[dict], machines: Sequence[str]) -> dict:
    """A study's results: per machine its best and worst point, spread and every row; per
    swept parameter and value, the best point reachable with that value on each machine."""
    by_machine: dict[str, dict] = {}
    for machine in machines:
        mine = [r for r in rows if r["machine"] == machine]
        ok = sorted((r for r in mine if r["status"] == "ok"), key=lambda r: r["latency_ns"])
        errors: dict[str, int] = {}
        for r in mine:
            if r["status"] != "ok":
                errors[str(r["error"])] = errors.get(str(r["error"]), 0) + 1
        by_machine[machine] = {
            "points": len(mine), "ok": len(ok), "errors": len(mine) - len(ok),
            "best": _point_summary(study, ok[0]) if ok else None,
            "worst": _point_summary(study, ok[-1]) if ok else None,
            "spread": ok[-1]["latency_ns"] / ok[0]["latency_ns"] if ok else None,
            "error_messages": errors,
            "rows": [_point_summary(study, r) for r in mine]}
    profiles: dict[str, list[dict]] = {}
    for parameter in _swept(study):
        profile = []
        for value in _values(study, parameter):
            entry: dict = {"value": value}
            for machine in machines:
                ok = [r for r in rows if r["machine"] == machine and r["status"] == "ok"
                      and _value(study, r, parameter) == value]
                best = min(ok, key=lambda r: r["latency_ns"]) if ok else None
                entry[machine] = None if best is None else {
                    "latency_ns": best["latency_ns"], "tensor_hfu": best["tensor_hfu"],
                    "config": _config(study, best)}
            profile.append(entry)
        profiles[parameter] = profile
    variants = {}
    if len(study.labels()) > 1:
        for label in study.labels():
            bests = {}
            for machine in machines:
                ok = [r for r in rows if r["machine"] == machine and r["status"] == "ok"
                      and study.variants[str(r["workload"])] == label]
                bests[machine] = (_point_summary(study, min(ok, key=lambda r: r["latency_ns"]))
                                  if ok else None)
            variants[label] = {"best": bests, "differs": _differs(bests)}
    # Which variants take each parameter (the blocks only the blocked kernels, ...).
    scope = {parameter: [label for label in study.labels() if any(
        study.variants[str(r["workload"])] == label and _value(study, r, parameter) is not None
        for r in rows)] for parameter in profiles}
    return {"kernel": study.kernel, "problem": study.problem, "parameters": _swept(study),
            "machines": by_machine, "profiles": profiles, "scope": scope, "variants": variants,
            "best_differs": _differs({m: by_machine[m]["best"] for m in machines})}


def _differs(bests: Mapping[str, dict | None]) -> dict[str, dict[str, Value]]:
    """The parameters (variant and layout) whose value in the best configuration differs
    between machines: parameter -> machine -> value."""
    bests = {m: best for m, best in bests.items() if best is not None}
    if len(bests) < 2:
        return {}
    settings = {m: {VARIANT: b["variant"], **b["layout"]} for m, b in bests.items()}
    names = list(dict.fromkeys(k for s in settings.values() for k in s))
    return {k: {m: s.get(k) for m, s in settings.items()} for k in names
            if len({json.dumps(s.get(k)) for s in settings.values()}) > 1}


# ---- the table -------------------------------------------------------------------------------
def _us(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1e3:.1f}"


def _differs_text(differs: Mapping[str, Mapping[str, Value]]) -> str:
    return "; ".join(f"{k} ({', '.join(f'{m} {v}' for m, v in by.items())})"
                     for k, by in differs.items())


def _profile_cell(best: dict | None) -> str:
    return "-" if best is None else f"{_us(best['latency_ns'])} ({best['tensor_hfu']:.2f})"


def table(results: dict) -> str:
    machines = results["machines"]
    lines = []
    for study in results["kernels"]:
        lines.append(f"== {study['kernel']}: {study['problem']} ==")
        lines.append(f"{'machine':<13} {'points':>6} {'errors':>6} {'best us':>9} {'HFU':>5} "
                     f"{'worst us':>9} {'spread':>7}  best configuration")
        for machine in machines:
            m = study["machines"][machine]
            best, worst = m["best"], m["worst"]
            if best is None:
                lines.append(f"{machine:<13} {m['points']:>6} {m['errors']:>6}  no point ran")
                continue
            lines.append(f"{machine:<13} {m['points']:>6} {m['errors']:>6} "
                         f"{_us(best['latency_ns']):>9} {best['tensor_hfu']:>5.2f} "
                         f"{_us(worst['latency_ns']):>9} {m['spread']:>6.2f}x  {best['config']}")
        for machine in machines:
            for message, count in study["machines"][machine]["error_messages"].items():
                lines.append(f"  {machine}: {count} point(s) cannot run: {message}")
        if study["best_differs"]:
            lines.append(f"  best configurations differ in {_differs_text(study['best_differs'])}")
        if study["variants"]:
            lines.append(f"  {'best of each variant':<18} {'machine':<13} {'us':>9} {'HFU':>5}  "
                         f"layout")
        for label, variant in study["variants"].items():
            for machine in machines:
                best = variant["best"][machine]
                layout = "-" if best is None else " ".join(
                    f"{k}={v}" for k, v in best["layout"].items())
                lines.append(f"  {label:<18} {machine:<13} "
                             f"{_us(best and best['latency_ns']):>9} "
                             f"{'-' if best is None else format(best['tensor_hfu'], '.2f'):>5}  "
                             f"{layout}")
            if variant["differs"]:
                lines.append(f"  {'':<18} differs in {_differs_text(variant['differs'])}")
        if study["profiles"]:
            lines.append(f"  {'parameter':<18} {'value':<15}" + "".join(
                f" {machine + ' us (HFU)':>24}" for machine in machines))
            for parameter, profile in study["profiles"].items():
                for entry in profile:
                    cells = "".join(f" {_profile_cell(entry[m]):>24}" for m in machines)
                    lines.append(f"  {parameter:<18} {str(entry['value']):<15}{cells}")
        lines.append("")
    return "\n".join(lines)


# ---- the plots -------------------------------------------------------------------------------
PLOT_COLUMNS = 5  # parameters per row of panels


def plot(study: dict, machines: Sequence[str], path: Path) -> Path:
    """Latency (upper panel; a log scale where it spans more than 3x) and TensorE HFU (lower
    panel) of the best point for each value of each swept parameter: a pair of panels per
    parameter, a line per machine."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    # Plain numbers on the log axes: every decade, and the minor ticks led by `digits`.
    def minor(digits: str) -> FuncFormatter:
        return FuncFormatter(lambda v, _: f"{v:g}" if f"{v:e}"[0] in digits else "")

    parameters = list(study["profiles"])
    columns = max(1, min(PLOT_COLUMNS, len(parameters)))
    blocks = max(1, math.ceil(len(parameters) / columns))
    figure = Figure(figsize=(max(3.3 * columns + 0.5, 6.0), 4.6 * blocks + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(2 * blocks, columns, squeeze=False)
    for ax in axes.flat:  # the panels of the parameters become visible as they are drawn
        ax.set_visible(False)
    markers = "osD^v"
    for index, parameter in enumerate(parameters):
        block, col = divmod(index, columns)
        latency_ax, hfu_ax = axes[2 * block][col], axes[2 * block + 1][col]
        profile = study["profiles"][parameter]
        labels = [str(entry["value"]) for entry in profile]
        x = list(range(len(labels)))
        for i, machine in enumerate(machines):
            best = [entry[machine] for entry in profile]
            style = {"marker": markers[i % len(markers)], "label": machine}
            latency_ax.plot(x, [math.nan if b is None else b["latency_ns"] / 1e3 for b in best],
                            **style)
            hfu_ax.plot(x, [math.nan if b is None else 100 * b["tensor_hfu"] for b in best],
                        **style)
        for ax, ylabel in ((latency_ax, "best latency (us)"), (hfu_ax, "TensorE HFU (%)")):
            ax.set_visible(True)
            ax.set_xticks(x, labels, rotation=25 if max(map(len, labels)) > 5 else 0,
                          fontsize="small")
            ax.grid(True, alpha=0.3)
            ax.margins(x=0.12)  # room for the first and last rotated label
            if col == 0:
                ax.set_ylabel(ylabel)
        drawn = [e[m]["latency_ns"] for e in profile for m in machines if e[m] is not None]
        if drawn and max(drawn) > 3 * min(drawn):  # a log scale only where it is needed
            latency_ax.set_yscale("log")
            latency_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            low, high = latency_ax.get_ylim()
            latency_ax.yaxis.set_minor_formatter(minor("235" if high / low > 4 else "23456789"))
        scope = study["scope"][parameter]
        scoped = study["variants"] and len(scope) < len(study["variants"])
        latency_ax.set_title(f"{parameter}\n({', '.join(scope)})" if scoped else parameter,
                             fontsize="medium")
        hfu_ax.set_ylim(bottom=0, top=max(1.0, hfu_ax.get_ylim()[1]))
        if all(e[m] is None or e[m]["tensor_hfu"] == 0 for e in profile for m in machines):
            hfu_ax.text(0.5, 0.5, "TensorE not used", transform=hfu_ax.transAxes,
                        ha="center", va="center", color="grey")
    axes[0][0].legend(fontsize="small")
    figure.suptitle(f"{study['kernel']}: {study['problem']}\nbest point for each value")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


# ---- running ---------------------------------------------------------------------------------
def run(quick: bool = False, machines: Sequence[str] = MACHINES, csv: Path | None = None,
        workers: int | None = None, resume: bool = False) -> dict:
    """Run every study's grid as one sweep into `csv` and summarise it (the JSON document)."""
    chosen = studies(quick)
    specs = {study.kernel: study.specs(machines) for study in chosen}
    # Machine names as the points spell them (aliases such as inf2 become inf2.xlarge).
    machines = list(next(iter(specs.values()))[0].machines)
    suite = SuiteSpec.of("layouts-quick" if quick else "layouts",
                         [spec for parts in specs.values() for spec in parts])
    csv = csv or RESULTS / ("layouts-quick.csv" if quick else "layouts.csv")
    start = time.perf_counter()
    summary = run_sweep(suite, csv, workers=workers, resume=resume)
    wall = time.perf_counter() - start
    ids = {p.id for p in suite.points()}
    rows = [r for r in load_results(csv) if r["id"] in ids]  # a resumed file may hold more
    kernels = []
    for study in chosen:
        mine = {p.id for spec in specs[study.kernel] for p in spec.points()}
        kernels.append(summarise(study, [r for r in rows if r["id"] in mine], machines))
    from benchmarks.speed import machine_info

    return {"schema": SCHEMA, "quick": quick, "machines": machines, "host": machine_info(),
            "workers": workers or default_workers(), "points": summary.total,
            "computed": summary.computed, "failed_points": sum(r["status"] != "ok" for r in rows),
            "sweep_wall_s": round(wall, 2), "csv": str(csv), "kernels": kernels}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small grid (for tests)")
    parser.add_argument("--json", type=Path, help="write the results here (default "
                        "benchmarks/results/layouts.json, layouts-quick.json with --quick)")
    parser.add_argument("--plots", type=Path, help="write one PNG per kernel here (default "
                        "benchmarks/results/layouts/, layouts-quick/ with --quick)")
    parser.add_argument("--csv", type=Path, help="the sweep's results file (default "
                        "benchmarks/results/layouts.csv, layouts-quick.csv with --quick)")
    parser.add_argument("--machines", default=",".join(MACHINES),
                        help="comma-separated instance presets or machine files "
                             f"(default {','.join(MACHINES)})")
    parser.add_argument("--workers", type=int, help="processes of the pool (default: one per "
                        "CPU)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in the CSV (default: start it afresh)")
    args = parser.parse_args(argv)
    stem = "layouts-quick" if args.quick else "layouts"
    results = run(args.quick, [m for m in args.machines.split(",") if m], args.csv,
                  args.workers, args.resume)
    plots = args.plots or RESULTS / stem
    results["plots"] = [str(plot(study, results["machines"], plots / f"{study['kernel']}.png"))
                        for study in results["kernels"]]
    path = args.json or RESULTS / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(table(results))
    print(f"{results['points']} points ({results['failed_points']} cannot run) on "
          f"{results['workers']} worker(s) in {results['sweep_wall_s']:.1f} s; JSON {path}, "
          f"plots in {plots}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
