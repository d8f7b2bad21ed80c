"""SCALE-Sim 3.0.0 side by side with our SCALE-Sim-compatible model and the NeuronCore TensorE.

For each layer of benchmarks/layers/*.csv (SCALE-Sim topology files) and each array size, runs
`emulator.scalesim.schedule` in a child process (wall time and peak RSS of that process) and
prints its cycles and SRAM/DRAM access counts, next to the TensorE time our default NeuronCore-v2
model gives the same GEMM: `tiled_matmul` with the filters stationary (SCALE-Sim's N, padded to
128), the output pixels moving (M, padded to 128 up to 512 and to 512 beyond) and K padded to 128,
in bf16.  With --with-scalesim it also installs scalesim==3.0.0 into its own virtual environment
(benchmarks/.scalesim-venv), runs SCALE-Sim on every layer as a child process with the same
config (CALC bandwidth mode, no traces) and compares report items, wall time and peak RSS.
"model s" is the time of `schedule` alone; "wall s" and "peak MiB" are those of the whole child
process (interpreter start, imports and numba cache loads included), as for SCALE-Sim; "wall
ratio" divides SCALE-Sim's process wall time by ours, "vs model" by our `schedule` time.

    python -m benchmarks.scalesim_compare [--with-scalesim] [--layers conv1,gemm512]
                                          [--arrays 128x128,32x32] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from emulator.scalesim import (
    MODES,
    REPORT_COLUMNS,
    ConvLayer,
    Layer,
    ScaleSimConfig,
    read_topology,
    schedule,
)
from isa.target import INF2

ROOT = Path(__file__).resolve().parent
LAYER_FILES = {"gemm": ROOT / "layers" / "gemm.csv", "conv": ROOT / "layers" / "resnet50.csv"}
VENV = ROOT / ".scalesim-venv"
SCALESIM_REQUIREMENTS = ("scalesim==3.0.0", "numpy<2.4")
# Report items that must agree exactly; the utilisation percentages are floats SCALE-Sim
# averages fold by fold, so they agree to rounding.
EXACT_ITEMS = tuple(f for f in REPORT_COLUMNS if not f.endswith("_pct"))


@dataclass(frozen=True)
class Case:
    """One layer on one array in one SCALE-Sim dataflow."""

    kind: str  # "gemm" or "conv": which topology file the layer comes from
    layer: Layer
    config: ScaleSimConfig

    @property
    def label(self) -> str:
        return f"{self.layer.name} {self.config.rows}x{self.config.cols} {self.config.mode}"


# ---- child processes: wall time and peak RSS of exactly one run ------------------------------


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it ended just before the timeout


def measured_run(cmd: list[str], timeout_s: float, cwd: Path | None = None) -> dict:
    """Run `cmd`; its wall seconds, peak RSS (MiB, from wait4), exit status and stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, start_new_session=True)
        timer = threading.Timer(timeout_s, kill_group, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
        out.seek(0)
        err.seek(0)
        return {"wall_s": wall, "peak_mib": usage.ru_maxrss / 1024,  # ru_maxrss is in KiB
                "returncode": proc.returncode, "timed_out": wall >= timeout_s and
                proc.returncode == -signal.SIGKILL, "stdout": out.read().decode(),
                "stderr": err.read().decode()[-2000:]}


def config_args(config: ScaleSimConfig) -> list[str]:
    return [f"{config.rows}x{config.cols}", config.mode, str(config.ifmap_sram_kb),
            str(config.filter_sram_kb), str(config.ofmap_sram_kb)]


def measure_ours(case: Case, timeout_s: float) -> dict:
    """Our model on one case in a fresh interpreter (imports and numba cache loads included)."""
    cmd = [sys.executable, "-m", "benchmarks.scalesim_compare", "--child", case.kind,
           case.layer.name, *config_args(case.config)]
    run = measured_run(cmd, timeout_s, cwd=ROOT.parent)
    if run["returncode"] != 0:
        raise RuntimeError(f"our model failed on {case.label}: {run['stderr']}")
    child = json.loads(run["stdout"].strip().splitlines()[-1])
    return {"report": child["report"], "schedule_s": child["schedule_s"],
            "wall_s": run["wall_s"], "peak_mib": run["peak_mib"]}


def child_main(kind: str, name: str, array: str, mode: str, ifmap_kb: str, filter_kb: str,
               ofmap_kb: str) -> None:
    layer = find_layers(kind, [name])[0]
    rows, cols = parse_array(array)
    config = ScaleSimConfig(rows, cols, mode, int(ifmap_kb), int(filter_kb), int(ofmap_kb))
    start = time.perf_counter()
    report = schedule(layer, config)
    seconds = time.perf_counter() - start
    print(json.dumps({"report": report.to_json(), "schedule_s": seconds}))


# ---- SCALE-Sim --------------------------------------------------------------------------------


def scalesim_python() -> Path:
    """The interpreter of our SCALE-Sim virtual environment, created on first use."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} and installing {' '.join(SCALESIM_REQUIREMENTS)} ...",
              file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                            "print(m.version('scalesim'))"], capture_output=True, text=True)
    if probe.stdout.strip() != "3.0.0":
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        *SCALESIM_REQUIREMENTS], check=True)
    return python


def scalesim_cfg(config: ScaleSimConfig) -> str:
    """A SCALE-Sim 3.0.0 config: every section its reader requires, CALC bandwidth mode."""
    return f"""[general]
run_name = run

[architecture_presets]
ArrayHeight: {config.rows}
ArrayWidth: {config.cols}
IfmapSramSzkB: {config.ifmap_sram_kb}
FilterSramSzkB: {config.filter_sram_kb}
OfmapSramSzkB: {config.ofmap_sram_kb}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: 10
Dataflow: {config.dataflow}
MemoryBanks: 1
ReadRequestBuffer: 512
WriteRequestBuffer: 512

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def topology_line(layer: Layer) -> tuple[str, str]:
    """(header, line) of a one-layer topology file in SCALE-Sim's format, trailing comma too."""
    if isinstance(layer, ConvLayer):
        return ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                "Num Filter, Strides,",
                f"{layer.name}, {layer.ifmap_h}, {layer.ifmap_w}, {layer.filter_h}, "
                f"{layer.filter_w}, {layer.channels}, {layer.filters}, {layer.stride},")
    return "Layer, M, N, K,", f"{layer.name}, {layer.m}, {layer.n}, {layer.k},"


def read_scalesim_reports(run_dir: Path) -> dict:
    """Layer 0's items of COMPUTE_REPORT.csv and DETAILED_ACCESS_REPORT.csv, by our names."""
    columns: dict[str, str] = {}
    for name in ("COMPUTE_REPORT.csv", "DETAILED_ACCESS_REPORT.csv"):
        with open(run_dir / name, newline="") as f:
            header, first = list(csv.reader(f))[:2]
        columns.update({h.strip(): v.strip() for h, v in zip(header, first)})
    missing = [c for c in REPORT_COLUMNS.values() if c not in columns]
    if missing:
        raise ValueError(f"{run_dir}: SCALE-Sim reports lack columns {missing}")
    return {field: float(columns[col]) for field, col in REPORT_COLUMNS.items()}


def measure_scalesim(case: Case, python: Path, timeout_s: float) -> dict:
    """SCALE-Sim on one case: its report items, wall time and peak RSS (or why it has none)."""
    work = Path(tempfile.mkdtemp(prefix="scalesim-"))
    try:
        (work / "scale.cfg").write_text(scalesim_cfg(case.config))
        header, line = topology_line(case.layer)
        (work / "topology.csv").write_text(f"{header}\n{line}\n")
        (work / "layout.csv").write_text("Layer name,\n")  # read even when no layout is used
        cmd = [str(python), "-m", "scalesim.scale", "-c", "scale.cfg", "-t", "topology.csv",
               "-l", "layout.csv", "-p", "out", "-i", case.kind, "-s", "N"]
        run = measured_run(cmd, timeout_s, cwd=work)
        result = {"wall_s": run["wall_s"], "peak_mib": run["peak_mib"], "report": None}
        if run["timed_out"]:
            result["error"] = f"timed out after {timeout_s:.0f} s"
        elif run["returncode"] != 0:
            result["error"] = f"exit {run['returncode']}: {run['stderr'].strip()[-300:]}"
        else:
            result["report"] = read_scalesim_reports(work / "out" / "run")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def agreement(ours: dict, theirs: dict) -> dict:
    """Which report items differ: exact for counts and cycles, 1e-9 relative for percentages."""
    exact = [f for f in EXACT_ITEMS if ours[f] != theirs[f]]
    close = [f for f in REPORT_COLUMNS if f.endswith("_pct")
             and abs(ours[f] - theirs[f]) > 1e-9 * max(1.0, abs(theirs[f]))]
    return {"cycles_equal": ours["total_cycles"] == theirs["total_cycles"],
            "accesses_equal": not [f for f in exact if "reads" in f or "writes" in f],
            "differing": exact + close}


# ---- the NeuronCore Tensor engine ----------------------------------------------------------------


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tensor_engine(layer: Layer) -> dict:
    """TensorE busy cycles of our default NeuronCore-v2 model on the layer's GEMM (bf16)."""
    from emulator.runner import run
    from kernels.programs import tiled_matmul

    m, n, k = layer.mnk
    # Stationary tiles are matmul_max_k x matmul_max_m, moving tiles at most matmul_max_n wide.
    widest = INF2.matmul_max_n
    moving = round_up(m, INF2.matmul_max_m) if m <= widest else round_up(m, widest)
    shape = {"m": round_up(n, INF2.matmul_max_m), "k": round_up(k, INF2.matmul_max_k),
             "n": moving, "tile_n": min(moving, widest)}
    report = run(tiled_matmul(shape["m"], shape["k"], shape["n"], "bf16",
                              tile_n=shape["tile_n"]), functional=False).report
    tensor = report.cores[0].engines["tensor"]
    return {"cycles": tensor.cycles, "busy_ns": tensor.busy_ns, "latency_ns": report.latency_ns,
            "padded": shape}


# ---- driver -----------------------------------------------------------------------------------


def parse_array(text: str) -> tuple[int, int]:
    rows, sep, cols = text.lower().partition("x")
    if not sep or not rows.isdigit() or not cols.isdigit():
        raise argparse.ArgumentTypeError(f"array {text!r} must look like 128x128")
    return int(rows), int(cols)


def find_layers(kind: str, names: list[str] | None) -> list[Layer]:
    layers = read_topology(LAYER_FILES[kind], kind)
    if names is None:
        return list(layers)
    return [layer for layer in layers if layer.name in names]


def all_layers(names: list[str] | None) -> list[tuple[str, Layer]]:
    found = [(kind, layer) for kind in LAYER_FILES for layer in find_layers(kind, names)]
    known = {layer.name for kind in LAYER_FILES for layer in find_layers(kind, None)}
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise SystemExit(f"unknown layers {unknown}; known: {', '.join(sorted(known))}")
    return found


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3g}" if a is not None and b else "-"


def print_tables(records: list[dict], with_scalesim: bool) -> None:
    print(f"{'layer':10s} {'array':>7s} {'mode':11s} {'folds':>5s} {'cycles':>9s} "
          f"{'SRAM rd ifmap':>13s} {'filter':>9s} {'SRAM wr':>9s} {'DRAM rd ifmap':>13s} "
          f"{'filter':>9s} {'DRAM wr':>9s} {'model s':>7s} {'wall s':>7s} {'peak MiB':>8s} "
          f"{'TensorE cyc':>11s} {'x TensorE':>9s}")
    for r in records:
        o = r["ours"]["report"]
        print(f"{o['layer']:10s} {o['rows']:>3d}x{o['cols']:<3d} {o['mode']:11s} "
              f"{o['folds']:5d} {o['total_cycles']:9d} {o['ifmap_sram_reads']:13d} "
              f"{o['filter_sram_reads']:9d} {o['ofmap_sram_writes']:9d} "
              f"{o['ifmap_dram_reads']:13d} {o['filter_dram_reads']:9d} "
              f"{o['ofmap_dram_writes']:9d} {r['ours']['schedule_s']:7.3f} "
              f"{r['ours']['wall_s']:7.2f} "
              f"{r['ours']['peak_mib']:8.0f} {r['tensor_engine']['cycles']:11.0f} "
              f"{ratio(o['total_cycles'], r['tensor_engine']['cycles']):>9s}")
    if not with_scalesim:
        return
    print()
    print(f"{'layer':10s} {'array':>7s} {'mode':11s} {'SCALE-Sim cyc':>13s} {'cycles =':>8s} "
          f"{'accesses =':>10s} {'differs':>8s} {'SS wall s':>9s} {'SS MiB':>7s} "
          f"{'wall ratio':>10s} {'vs model':>8s} {'mem ratio':>9s}")
    for r in records:
        o, s = r["ours"], r["scalesim"]
        report = o["report"]
        head = (f"{report['layer']:10s} {report['rows']:>3d}x{report['cols']:<3d} "
                f"{report['mode']:11s}")
        if s["report"] is None:
            print(f"{head} {s['error']}  (after {s['wall_s']:.0f} s, {s['peak_mib']:.0f} MiB)")
            continue
        a = r["agreement"]
        print(f"{head} {s['report']['total_cycles']:13.0f} {str(a['cycles_equal']):>8s} "
              f"{str(a['accesses_equal']):>10s} {len(a['differing']):8d} {s['wall_s']:9.2f} "
              f"{s['peak_mib']:7.0f} {ratio(s['wall_s'], o['wall_s']):>10s} "
              f"{ratio(s['wall_s'], o['schedule_s']):>8s} "
              f"{ratio(s['peak_mib'], o['peak_mib']):>9s}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-scalesim", action="store_true",
                        help="also run SCALE-Sim 3.0.0 (installed into benchmarks/.scalesim-venv)")
    parser.add_argument("--layers", type=lambda s: s.split(","), default=None,
                        help="comma-separated layer names (default: all in benchmarks/layers)")
    parser.add_argument("--arrays", type=lambda s: [parse_array(a) for a in s.split(",")],
                        default=[(128, 128), (32, 32)], help="e.g. 128x128,32x32")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["scalesim-ws"],
                        help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--sram-kb", type=int, default=64,
                        help="kB of each of the ifmap, filter and ofmap SRAMs (SCALE-Sim's "
                        "configs/scale.cfg: 64)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds allowed to each SCALE-Sim run")
    parser.add_argument("--json", type=Path, default=None, help="also write the records here")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(*args.child)
        return
    for mode in args.modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    python = scalesim_python() if args.with_scalesim else None
    records = []
    for kind, layer in all_layers(args.layers):
        tensor = tensor_engine(layer)
        for rows, cols in args.arrays:
            for mode in args.modes:
                config = ScaleSimConfig(rows, cols, mode, args.sram_kb, args.sram_kb,
                                        args.sram_kb)
                case = Case(kind, layer, config)
                print(f"running {case.label} ...", file=sys.stderr)
                record = {"case": case.label, "ours": measure_ours(case, args.timeout),
                          "tensor_engine": tensor}
                if python is not None:
                    record["scalesim"] = measure_scalesim(case, python, args.timeout)
                    if record["scalesim"]["report"] is not None:
                        record["agreement"] = agreement(record["ours"]["report"],
                                                        record["scalesim"]["report"])
                records.append(record)
    print_tables(records, python is not None)
    if args.json is not None:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
