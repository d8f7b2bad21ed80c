"""The emulator's headline speed figures in one table (DESIGN.md, "Performance of the emulator").

(a) timing-only emulation, instructions per second at 1e4 .. 1e6 instructions (the pipelined
    program of benchmarks.timing_speed): the emulation proper (encode + schedule), and the whole
    of `run(program, functional=False)` with the race check off and on;
(b) functional emulation of a large bf16 tiled matmul against numpy computing the same result at
    the same precision (bf16-rounded operands, fp32 products and sums), and their ratio; the
    same for the library's conv2d (128 -> 128 channels, 3x3 on 56x56) and flash attention
    (4 heads x 2048 tokens x 128) kernels, traced once, against plain fp32 numpy;
(c) PE-level emulation, PE-updates per second (benchmarks.systolic_speed's 128x128 cases);
(d) cold start: a fresh interpreter that imports the runner and runs a small matmul with the
    numba cache present (run twice, the second reported);
(e) peak memory: each of (a)-(d) runs in a fresh subprocess that reports its own max RSS.

(a) is also drawn: seconds against program size, log-log, beside the 1e6 instructions/s line
(`--plot FILE`, default benchmarks/results/speed-timing.png).

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
DEFAULT_PLOT = Path(__file__).resolve().parent / "results" / "speed-timing.png"
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
    """(a): timing-only rates per program size (emulation proper, and whole runs without and
    with the race check), best of repeats, each on a freshly built program."""
    from benchmarks.timing_speed import rates, sizes_and_times

    rows = [{"instructions": n, **{f"{step}_s": value for step, value in seconds.items()},
             **rates(n, seconds)}
            for n, seconds in sizes_and_times(args.max, args.repeats)]
    return {"rows": rows}


def part_functional(args: argparse.Namespace) -> dict:
    """(b): functional-only emulation of an M=K=N bf16 tiled matmul vs the same in numpy, and
    of the library's conv2d and flash attention kernels vs numpy at the same precision."""
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
    return {"m": size, "k": size, "n": size, "dtype": "bf16",
            "instructions": program.instruction_count, "emulator_s": emulator_s,
            "numpy_s": numpy_s, "ratio": emulator_s / numpy_s,
            "max_relative_difference": _difference(emulated, golden),
            "kernels": [_library_kernel(name, shapes, numpy_fn, args.repeats)
                        for name, shapes, numpy_fn in _KERNELS]}


def _difference(result, golden) -> float:
    import numpy as np

    return float(np.abs(result - golden).max() / np.abs(golden).max())


def _conv_fp32(x, w):
    """3x3 convolution with padding 1 as plain numpy would write it: one matmul per tap."""
    import numpy as np

    x, w = x.astype(np.float32), w.astype(np.float32)
    n, c, h, width = x.shape
    c_out, _, kh, kw = w.shape
    padded = np.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    out = np.zeros((n, c_out, h * width), np.float32)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i:i + h, j:j + width].reshape(n, c, h * width)
            out += w[:, :, i, j] @ window
    return out.reshape(n, c_out, h, width)


def _attention_fp32(q, k, v):
    """softmax(q k^T / sqrt(d)) v in fp32, per batch and head."""
    import numpy as np

    q, k, v = (a.astype(np.float32) for a in (q, k, v))
    scores = q @ k.swapaxes(-1, -2) * np.float32(q.shape[-1] ** -0.5)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights @ v


# Library kernels timed against numpy, at their bf16 shapes of the layouts suite.
_KERNELS = (
    ("conv2d", {"batch": 1, "c_in": 128, "c_out": 128, "height": 56, "width": 56,
                "kernel_h": 3, "kernel_w": 3}, _conv_fp32),
    ("attention", {"batch": 1, "heads": 4, "seq": 2048, "head_dim": 128}, _attention_fp32),
)


def _library_kernel(name: str, shapes: dict, numpy_fn, repeats: int) -> dict:
    """Trace a library kernel once, then time its functional emulation against numpy."""
    import numpy as np

    from emulator.runner import run
    from isa import INF2
    from kernels.library import LIBRARY
    from kernels.trace.tracer import trace_kernel

    entry = LIBRARY[name]
    options = {"padding": 1} if name == "conv2d" else {}
    arrays = entry.inputs(shapes, options, dtype="bf16")
    kwargs = entry.kernel_kwargs(options)
    start = time.perf_counter()
    traced = trace_kernel(entry.kernel, arrays, kwargs, INF2)
    trace_s = time.perf_counter() - start
    (program,) = traced.programs
    inputs = {arg: np.asarray(value) for arg, value in traced.arguments if arg in traced.inputs}
    (output,) = traced.outputs

    def emulate():
        return run(program, inputs, functional=True, timing=False,
                   race_check=False).outputs[output]

    emulator_s, emulated = _best(emulate, repeats)
    numpy_s, golden = _best(lambda: numpy_fn(*arrays), repeats)
    return {"kernel": name, "shapes": shapes, "dtype": "bf16",
            "instructions": program.instruction_count, "trace_s": trace_s,
            "emulator_s": emulator_s, "numpy_s": numpy_s, "ratio": emulator_s / numpy_s,
            "max_relative_difference": _difference(
                np.asarray(emulated, np.float32).reshape(golden.shape), golden)}


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
            f"{r['emulate_per_s']:.3g}", f"instructions/s emulating (encode {r['encode_s']:.3f} s "
                                         f"+ schedule {r['schedule_s']:.3f} s)")
        row("    whole run, race check off", f"{r['run_per_s']:.3g}",
            f"instructions/s (+ validate {r['validate_s']:.3f} s, report {r['report_s']:.3f} s)")
        row("    whole run, race check on (the default)", f"{r['run_with_race_check_per_s']:.3g}",
            f"instructions/s (+ race check {r['races_s']:.3f} s)")
    f = results.get("functional")
    if f:
        shape = f"{f['m']}x{f['k']}x{f['n']} {f['dtype']}"
        row(f"(b) functional matmul {shape}", f"{f['emulator_s']:.3f}", "s, emulator")
        row("    numpy, same precision", f"{f['numpy_s']:.3f}", "s, bf16 operands, fp32 matmul")
        row("    emulator / numpy", f"{f['ratio']:.1f}",
            f"x (max relative difference {f['max_relative_difference']:.1e})")
        for k in f.get("kernels", []):
            row(f"(b) functional {k['kernel']} bf16", f"{k['emulator_s']:.3f}",
                f"s, emulator ({k['instructions']:,} instructions; tracing took "
                f"{k['trace_s']:.2f} s)")
            row("    numpy, same precision", f"{k['numpy_s']:.3f}", "s, fp32 from bf16 inputs")
            row("    emulator / numpy", f"{k['ratio']:.1f}",
                f"x (max relative difference {k['max_relative_difference']:.1e})")
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
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, metavar="FILE",
                        help="PNG of timing-only seconds against program size (default "
                             f"{DEFAULT_PLOT.relative_to(ROOT)})")
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
    if results.get("timing", {}).get("rows"):
        print(f"plot of the timing-only rates: {plot_timing(results['timing']['rows'], args.plot)}")
    return results


def plot_timing(rows: list[dict], path: Path) -> Path:
    """Seconds of a timing-only run against instructions, log-log, with the 1e6/s line: a
    straight line parallel to it is linear scaling."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    sizes = [r["instructions"] for r in rows]
    for key, label in (("run_with_race_check_per_s", "whole run, race check on"),
                       ("run_per_s", "whole run, race check off"),
                       ("emulate_per_s", "emulation (encode + schedule)")):
        axes.plot(sizes, [n / r[key] for n, r in zip(sizes, rows)], marker="o", label=label)
    axes.plot(sizes, [n / 1e6 for n in sizes], "k--", linewidth=1, label="1e6 instructions/s")
    axes.set(xscale="log", yscale="log", xlabel="instructions in the program",
             ylabel="seconds", title="timing-only emulation")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    main()
