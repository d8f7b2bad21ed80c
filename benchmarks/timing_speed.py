"""Speed of timing-only emulation: instructions per second, and whether it stays linear.

A pipelined load -> matmul -> drain program is generated at 1e4 .. 1e6 instructions (loads over
four DMA queues, semaphores between every stage).  For each size the benchmark times the two
halves of timing-only emulation separately, after a warm-up run that compiles (or loads from the
numba cache) the scheduler:

* encode: reading the Python instruction records into flat arrays (costs from the opcode table);
* schedule: the numba list scheduler over those arrays.

Run: `python -m benchmarks.timing_speed [--max 1000000]`.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Iterator

from emulator.machine import NEURONCORE_V2
from emulator.timing import encode, schedule
from isa import DmaCopy, MatMul, Program, ProgramBuilder, TensorCopy, hbm, psum, sbuf

QUEUES = 4


def pipeline_program(instructions: int) -> Program:
    """About `instructions` instructions: 7 per step (load, matmul, drain and 4 sync records)."""
    b = ProgramBuilder(f"pipeline_{instructions}")
    b.tensor("x", (128, 8 * 512), "bf16", "input")
    loaded = [b.semaphore() for _ in range(QUEUES)]
    computed = b.semaphore()
    stationary = sbuf(128, 128, "bf16", 65536)
    for step in range(max(1, instructions // 7)):
        queue, slot, bank = step % QUEUES, step % 8, step % 4
        tile = sbuf(128, 512, "bf16", slot * 1024)
        b.emit(f"dma{queue}", DmaCopy(tile, hbm("x", 128, 4096, 512, "bf16", slot * 1024)))
        b.sync(f"dma{queue}", "tensor", loaded[queue])
        b.emit("tensor", MatMul(psum(128, 512, offset=bank * 2048), stationary, tile))
        b.sync("tensor", "vector", computed)
        b.emit("vector", TensorCopy(sbuf(128, 512, "fp32", 98304),
                                    psum(128, 512, offset=bank * 2048)))
    return b.build()


def measure(program: Program, repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` seconds for encoding and for scheduling `program`."""
    encode_s = schedule_s = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encoded = encode(program, NEURONCORE_V2)
        middle = time.perf_counter()
        schedule(program, NEURONCORE_V2, encoded=encoded)
        end = time.perf_counter()
        encode_s, schedule_s = min(encode_s, middle - start), min(schedule_s, end - middle)
    return encode_s, schedule_s


def sizes_and_times(largest: int, repeats: int) -> Iterator[tuple[int, float, float]]:
    """(instructions, encode s, schedule s) for programs of 1e4, 1e5, ... up to `largest`,
    after a warm-up that compiles (or loads from the numba cache) the scheduler."""
    schedule(pipeline_program(70), NEURONCORE_V2)
    size = 10_000
    while size <= largest:
        program = pipeline_program(size)
        yield (program.instruction_count,
               *measure(program, repeats if size < 1_000_000 else 1))
        size *= 10


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=1_000_000, help="largest program size")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    print(f"timing-only emulation speed on {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}, one core")
    print(f"{'instructions':>12} {'encode/s':>12} {'schedule/s':>12} {'end-to-end/s':>13} "
          f"{'us/instr':>9}")
    rows = []
    for n, encode_s, schedule_s in sizes_and_times(args.max, args.repeats):
        row = {"instructions": n, "encode_per_s": n / encode_s,
               "schedule_per_s": n / schedule_s, "end_to_end_per_s": n / (encode_s + schedule_s)}
        rows.append(row)
        print(f"{n:>12} {row['encode_per_s']:>12.3g} {row['schedule_per_s']:>12.3g} "
              f"{row['end_to_end_per_s']:>13.3g} {1e6 / row['end_to_end_per_s']:>9.3f}")
    if len(rows) > 1:
        ratio = rows[-1]["end_to_end_per_s"] / rows[0]["end_to_end_per_s"]
        print(f"linearity: per-instruction rate at {rows[-1]['instructions']} is {ratio:.2f}x "
              f"the rate at {rows[0]['instructions']} (1.0 = perfectly linear)")
    return rows


if __name__ == "__main__":
    main()
