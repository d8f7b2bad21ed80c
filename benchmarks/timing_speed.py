"""Speed of timing-only emulation: instructions per second, and whether it stays linear.

A race-free pipelined load -> matmul -> drain program is generated at 1e4 .. 1e6 instructions
(loads over four DMA queues, semaphores both ways between every stage).  For each size a fresh
program is built (not timed) and put through exactly what `run(program, functional=False)`
does, each step timed apart, after a warm-up run that compiles (or loads from the numba cache)
the numba parts:

* validate: the program against the architecture (each distinct instruction once);
* races: the race detector (vector clocks, every operand access, PSUM accumulation groups);
* encode: the instruction records into flat arrays (costs from the opcode table);
* schedule: the numba list scheduler over those arrays;
* report: per-engine busy time, cycles, FLOPs and memory traffic.

Rates: the emulation proper (encode + schedule), `run(..., functional=False,
race_check=False)` (validate + encode + schedule + report) and the whole default
`run(..., functional=False)` (with the race check).

Run: `python -m benchmarks.timing_speed [--max 1000000]`.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Iterator

from emulator.collector import collector_paused
from emulator.machine import NEURONCORE_V2
from emulator.races import check_races
from emulator.report import build_report
from emulator.timing import encode, schedule
from isa import DmaCopy, MatMul, Program, ProgramBuilder, TensorCopy, Wait, hbm, psum, sbuf

QUEUES = 4


def pipeline_program(instructions: int) -> Program:
    """About `instructions` instructions of a race-free double-buffered pipeline: each step
    loads a tile (8 SBUF slots, 4 DMA queues), multiplies it into one of 4 PSUM banks and
    drains the bank, with semaphores both ways between the stages (11 records a step)."""
    b = ProgramBuilder(f"pipeline_{instructions}")
    b.tensor("x", (128, 8 * 512), "bf16", "input")
    loaded = [b.semaphore() for _ in range(QUEUES)]
    computed, consumed, drained = b.semaphore(), b.semaphore(), b.semaphore()
    stationary = sbuf(128, 128, "bf16", 65536)
    for step in range(max(1, instructions // 11)):
        queue, slot, bank = step % QUEUES, step % 8, step % 4
        tile = sbuf(128, 512, "bf16", slot * 1024)
        if step >= 8:  # the matmul that read this slot 8 steps ago has finished
            b.emit(f"dma{queue}", Wait(consumed, step - 7))
        b.emit(f"dma{queue}", DmaCopy(tile, hbm("x", 128, 4096, 512, "bf16", slot * 1024)))
        b.sync(f"dma{queue}", "tensor", loaded[queue])
        if step >= 4:  # the drain of this bank 4 steps ago has finished
            b.emit("tensor", Wait(drained, step - 3))
        b.emit("tensor", MatMul(psum(128, 512, offset=bank * 2048), stationary, tile))
        b.signal("tensor", consumed)
        b.sync("tensor", "vector", computed)
        b.emit("vector", TensorCopy(sbuf(128, 512, "fp32", 98304),
                                    psum(128, 512, offset=bank * 2048)))
        b.signal("vector", drained)
    b.emit("dma0", Wait(drained, max(1, instructions // 11)))  # the last drain before the end
    return b.build()


STEPS = ("validate", "races", "encode", "schedule", "report")


def measure(instructions: int, repeats: int) -> tuple[int, dict[str, float]]:
    """(instructions, best-of-`repeats` seconds of each step), each repeat on a new program."""
    best = dict.fromkeys(STEPS, float("inf"))
    count = 0
    for _ in range(repeats):
        program = pipeline_program(instructions)
        count = program.instruction_count
        with collector_paused():  # as run() does
            seconds = _steps(program)
        best = {step: min(best[step], seconds[step]) for step in STEPS}
    return count, best


def _steps(program: Program) -> dict[str, float]:
    """Seconds of each step of `run(program, functional=False)`."""
    seconds = {}
    start = time.perf_counter()
    program.validate(NEURONCORE_V2.target)
    seconds["validate"] = time.perf_counter() - start
    start = time.perf_counter()
    check_races(program)
    seconds["races"] = time.perf_counter() - start
    start = time.perf_counter()
    encoded = encode(program, NEURONCORE_V2)
    seconds["encode"] = time.perf_counter() - start
    start = time.perf_counter()
    timed = schedule(program, NEURONCORE_V2, encoded=encoded)
    seconds["schedule"] = time.perf_counter() - start
    start = time.perf_counter()
    build_report(timed, NEURONCORE_V2)
    seconds["report"] = time.perf_counter() - start
    return seconds


def rates(count: int, seconds: dict[str, float]) -> dict[str, float]:
    """Instructions per second of the emulation proper, of a run without and with the race
    check."""
    emulate = seconds["encode"] + seconds["schedule"]
    checked = emulate + seconds["validate"] + seconds["report"]
    return {"emulate_per_s": count / emulate, "run_per_s": count / checked,
            "run_with_race_check_per_s": count / (checked + seconds["races"])}


def sizes_and_times(largest: int, repeats: int) -> Iterator[tuple[int, dict[str, float]]]:
    """(instructions, seconds per step) for programs of 1e4, 1e5, ... up to `largest`, after
    a warm-up that compiles (or loads from the numba cache) the numba parts."""
    warm = pipeline_program(100)
    check_races(warm)
    schedule(warm, NEURONCORE_V2)
    size = 10_000
    while size <= largest:
        yield measure(size, repeats if size < 1_000_000 else 1)
        size *= 10


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=1_000_000, help="largest program size")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    print(f"timing-only emulation speed on {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}, one core")
    print(f"{'instructions':>12} " + " ".join(f"{step + ' s':>10}" for step in STEPS)
          + f" {'emulate/s':>10} {'run/s':>10} {'+races/s':>10}")
    rows = []
    for n, seconds in sizes_and_times(args.max, args.repeats):
        row = {"instructions": n, **{f"{step}_s": seconds[step] for step in STEPS},
               **rates(n, seconds)}
        rows.append(row)
        print(f"{n:>12} " + " ".join(f"{seconds[step]:>10.4f}" for step in STEPS)
              + f" {row['emulate_per_s']:>10.3g} {row['run_per_s']:>10.3g}"
              f" {row['run_with_race_check_per_s']:>10.3g}")
    if len(rows) > 1:
        for key, what in (("emulate_per_s", "emulation"), ("run_per_s", "run")):
            ratio = rows[-1][key] / rows[0][key]
            print(f"linearity of {what}: the rate at {rows[-1]['instructions']} instructions is "
                  f"{ratio:.2f}x the rate at {rows[0]['instructions']} (1.0 = linear)")
    return rows


if __name__ == "__main__":
    main()
