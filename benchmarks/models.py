"""Whole models end to end in timing-only mode: BERT-large (24 layers, seq 128, batch 1) and
ResNet-50 (224x224, batch 1), compiled, lowered to library kernels, traced and scheduled on one
Inf2 NeuronCore.

For each model: the emulator's wall time split into compile (the graph passes), trace (the
`lower` pass: library kernels traced into one program), schedule (encoding and the numba
timing model) and the race check of the program, apart; then what the emulator reports: latency,
throughput on the instance, per-engine utilisation, HBM traffic and the top operators by engine
busy time.  The target is under 60 s per model on one CPU core.

Run: `python -m benchmarks.models [--model bert-large|resnet50|all] [--dtype bf16]
[--machine inf2.xlarge] [--top 10] [--json FILE]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from emulator.model_runner import build_model, run_model
from emulator.races import check_races

CASES = {
    "bert-large": {"seq": 128, "batch": 1},
    "resnet50": {"image_size": 224, "batch": 1},
}


def measure(name: str, dtype: str, machine: str, progress: bool) -> dict:
    start = time.perf_counter()
    graph = build_model(name, **CASES[name])
    built = time.perf_counter() - start
    result = run_model(graph, machine=machine, functional=False, precision=dtype,
                       progress=progress, race_check=False)
    t0 = time.perf_counter()
    for program in result.lowered.programs:
        check_races(program)
    races = time.perf_counter() - t0
    total = time.perf_counter() - start
    wall = result.report.wall_s
    return {"model": name, "result": result,
            "wall": {"build_s": built, "compile_s": wall["compile_s"],
                     "trace_s": wall["trace_s"], "schedule_s": wall["run_s"],
                     "race_check_s": races, "total_s": total}}


def print_case(case: dict, top: int) -> None:
    report = case["result"].report
    w = case["wall"]
    print(f"== {case['model']}: {report.instructions} instructions, "
          f"{len(case['result'].graph)} graph nodes")
    print(f"   wall: build {w['build_s']:.2f} s, compile {w['compile_s']:.2f} s, trace "
          f"{w['trace_s']:.2f} s, schedule {w['schedule_s']:.2f} s, race check "
          f"{w['race_check_s']:.2f} s; total {w['total_s']:.2f} s")
    text = report.text().splitlines()
    print("\n".join("   " + line for line in text[:-1]))  # the runner's own wall line is above
    if top != 10:
        for o in report.top(top)[10:]:
            print(f"     {o.node} {o.op} {o.busy_ns / 1e3:.1f} us")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=(*CASES, "all"), default="all",
                        help="which model (default all)")
    parser.add_argument("--dtype", default="bf16", help="storage precision (default bf16)")
    parser.add_argument("--machine", default="inf2.xlarge",
                        help="instance preset (default inf2.xlarge)")
    parser.add_argument("--top", type=int, default=10, help="operators to list (default 10)")
    parser.add_argument("--progress", action="store_true", help="progress lines on stderr")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    names = list(CASES) if args.model == "all" else [args.model]
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{args.dtype}, {args.machine}, timing only")
    cases = []
    for name in names:
        case = measure(name, args.dtype, args.machine, args.progress)
        print_case(case, args.top)
        cases.append(case)
    if args.json:
        with open(args.json, "w") as out:
            json.dump([{"model": c["model"], "wall": c["wall"],
                        "report": c["result"].report.to_json()} for c in cases], out, indent=1)
        print(f"figures written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
