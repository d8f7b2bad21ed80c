"""The emulator's headline speed figures in one table (DESIGN.md, "Performance of the emulator").

(a) timing-only emulation, instructions per second at 1e4 .. 1e6 instructions (the pipelined
    program of benchmarks.timing_speed);
(b) functional emulation of a large bf16 tiled matmul against numpy computing the same result at
    the same precision (bf16-rounded operands, fp32 products and sums), and their ratio;
(c) PE-level emulation, PE-updates per second (benchmarks.systolic_speed's 128x128 cases);
(d) cold start: a fresh interpreter that imports the runner and runs a small matmul with the
    numba cache present (run twice, the second reported);
(e) peak memory: each of (a)-(d) runs in a fresh subprocess that reports its own max RSS.

Run: `python -m benchmarks.speed [--max 1000000] [--matmul 2048] [--json FILE]`, or
`ncemu bench speed ...`.  The JSON (default benchmarks/results/speed.json) adds the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "speed.json"
PARTS = ("timing", "functional", "pe", "cold_start")

# (d): what a user's first command does, timed from inside and (by the parent) from outside.
COLD_START = """
import json, resource, time
start = time.perf_counter()
from emulator.runner import run
from kernels.programs import tiled_matmul, tiled_matmul_inputs
program = tiled_matmul(256, 256, 512)
result = run(program, tiled_matmul_inputs(program))
print(json.dumps({"in_process_s": time.perf_counter() - start,
                  "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def part_timing(args: argparse.Namespace) -> dict:
    """(a): end-to-end timing-only rate (encode + schedule) per program size, best of repeats."""
    from benchmarks.timing_speed import sizes_and_times

    rows = [{"instructions": n, "encode_s": encode_s, "schedule_s": schedule_s,
             "instructions_per_s": n / (encode_s + schedule_s)}
            for n, encode_s, schedule_s in sizes_and_times(args.max, args.repeats)]
    return {"rows": rows}


def part_functional(args: argparse.Namespace) -> dict:
    """(b): functional-only emulation of an M=K=N bf16 tiled matmul vs the same in numpy."""
    import ml_dtypes
    import numpy as np

    from emulator.runner import run
    from kernels.programs import tiled_matmul, tiled_matmul_inputs

    size = args.matmul
    program = tiled_matmul(size, size, size, "bf16")
    inputs = tiled_matmul_inputs(program)
    warm = tiled_matmul(256, 256, 512, "bf16")
    run(warm, tiled_matmul_inputs(warm), functional=True, timing=False, race_check=False)

    def emulate() -> np.ndarray:
        result = run(program, inputs, functional=True, timing=False, race_check=False)
        return result.outputs["result"]

    def numpy_same_precision() -> np.ndarray:
        # The loads round the operands to bf16; TensorE multiplies and PSUM sums in fp32.
        lhs_t = inputs["lhsT"].astype(ml_dtypes.bfloat16).astype(np.float32)
        rhs = inputs["rhs"].astype(ml_dtypes.bfloat16).astype(np.float32)
        return lhs_t.T @ rhs

    emulator_s, emulated = _best(emulate, args.repeats)
    numpy_s, golden = _best(numpy_same_precision, args.repeats)
    difference = float(np.abs(emulated - golden).max() / np.abs(golden).max())
    return {"m": size, "k": size, "n": size, "dtype": "bf16",
            "instructions": program.instruction_count, "emulator_s": emulator_s,
            "numpy_s": numpy_s, "ratio": emulator_s / numpy_s,
            "max_relative_difference": difference}


def part_pe(args: argparse.Namespace) -> dict:
    """(c): PE-updates per second of the numba PE-level array on the 128x128 cases."""
    from benchmarks.systolic_speed import CASES, best_seconds, operands
    from emulator.systolic import SystolicArray, simulate

    rows = []
    for case in CASES:
        if (case.rows, case.cols) != (128, 128):
            continue
        array = SystolicArray(case.rows, case.cols, case.dataflow)
        stationary, moving = operands(case)
        updates = simulate(array, stationary, moving).pe_updates
        seconds = best_seconds(lambda a=array, s=stationary, v=moving: simulate(a, s, v))
        rows.append({"dataflow": case.dataflow, "array": f"{case.rows}x{case.cols}",
                     "kmn": f"{case.k}x{case.m}x{case.n}", "pe_updates": updates,
                     "seconds": seconds, "pe_updates_per_s": updates / seconds})
    return {"rows": rows}


def cold_start() -> dict:
    """(d): wall time of a fresh `python -c` running a small matmul; the second of two runs."""
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD_START], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        wall = time.perf_counter() - start
        runs.append({"wall_s": wall, **json.loads(out.strip().splitlines()[-1])})
    return {"first_wall_s": runs[0]["wall_s"], "wall_s": runs[1]["wall_s"],
            "in_process_s": runs[1]["in_process_s"], "max_rss_kib": runs[1]["max_rss_kib"]}


def _best(work, repeats: int):
    """Best-of-`repeats` seconds of `work()` and its last result."""
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    return best, result


def in_subprocess(part: str, args: argparse.Namespace) -> dict:
    """Run one part in a fresh interpreter, so that its max RSS is its own."""
    command = [sys.executable, "-m", "benchmarks.speed", "--part", part, "--max", str(args.max),
               "--repeats", str(args.repeats), "--matmul", str(args.matmul)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"speed part {part} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numba
    import numpy

    return {"cpu": cpu, "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "python": platform.python_version(), "numpy": numpy.__version__,
            "numba": numba.__version__, "platform": platform.platform(),
            # Other work on the machine slows every figure; the load says how much there was.
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def table(results: dict) -> str:
    lines = [f"{'figure':<44} {'value':>14}  note"]

    def row(name: str, value: str, note: str = "") -> None:
        lines.append(f"{name:<44} {value:>14}  {note}")

    for r in results.get("timing", {}).get("rows", []):
        row(f"(a) timing-only, {r['instructions']:,} instructions",
            f"{r['instructions_per_s']:.3g}", f"instructions/s (encode {r['encode_s']:.3f} s + "
                                              f"schedule {r['schedule_s']:.3f} s)")
    f = results.get("functional")
    if f:
        shape = f"{f['m']}x{f['k']}x{f['n']} {f['dtype']}"
        row(f"(b) functional matmul {shape}", f"{f['emulator_s']:.3f}", "s, emulator")
        row("    numpy, same precision", f"{f['numpy_s']:.3f}", "s, bf16 operands, fp32 matmul")
        row("    emulator / numpy", f"{f['ratio']:.1f}",
            f"x (max relative difference {f['max_relative_difference']:.1e})")
    for r in results.get("pe", {}).get("rows", []):
        row(f"(c) PE-level {r['dataflow']} {r['array']} {r['kmn']}",
            f"{r['pe_updates_per_s']:.3g}", "PE-updates/s")
    c = results.get("cold_start")
    if c:
        row("(d) cold start, python -c run(small matmul)", f"{c['wall_s']:.2f}",
            f"s wall, numba cache warm (first run {c['first_wall_s']:.2f} s; "
            f"{c['in_process_s']:.2f} s after interpreter start)")
    for part in PARTS:
        if part in results:
            row(f"(e) peak memory, {part}", f"{results[part]['max_rss_kib'] / 1024:.0f}",
                "MiB max RSS of its process")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=1_000_000,
                        help="largest timing-only program, instructions (default 1e6)")
    parser.add_argument("--matmul", type=int, default=2048,
                        help="M = K = N of the functional bf16 matmul (default 2048)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only this part (repeatable); default all")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="FILE",
                        help=f"write the figures here (default {DEFAULT_JSON.relative_to(ROOT)})")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.part:
        result = {"timing": part_timing, "functional": part_functional, "pe": part_pe}[args.part](
            args)
        result["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(result))
        return result

    results: dict = {"suite": "speed", "machine": machine_info()}
    info = results["machine"]
    print(f"ncemu speed on {info['cpu']} ({info['nproc']} CPUs), python {info['python']}, "
          f"numpy {info['numpy']}, numba {info['numba']}, {info['date']}, load average "
          f"{info['load_average_1min']}", flush=True)
    for part in args.only or PARTS:
        print(f"  running {part} ...", file=sys.stderr, flush=True)
        results[part] = cold_start() if part == "cold_start" else in_subprocess(part, args)
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.json}")
    return results


if __name__ == "__main__":
    main()
