"""Speed of the numba PE-level systolic array (emulator/systolic.py), in PE-updates per second.

`pe_updates` counts the PE register updates the kernel performs (it steps only the PEs on the
active wavefront of the used columns), so "PE-updates/s" is work actually done; "array PE-cycles/s"
divides rows * cols * simulated cycles by the same time, i.e. the rate of a naive full-array
stepper that would be equally fast.  Run from the repository root:

    python -m benchmarks.systolic_speed
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from emulator.systolic import SystolicArray, simulate, simulate_reference

REPEATS = 7  # best of this many timed runs, after one warm-up run (numba compile / cache load)


@dataclass(frozen=True)
class Case:
    """One timed GEMM: the array, its dataflow and stationary[k, m].T @ moving[k, n]."""

    dataflow: str
    rows: int
    cols: int
    k: int
    m: int
    n: int

    def __post_init__(self) -> None:
        SystolicArray(self.rows, self.cols, self.dataflow)  # validates the array half
        for name in ("k", "m", "n"):
            if getattr(self, name) < 1:
                raise ValueError(f"benchmark dimension {name}={getattr(self, name)} must be >= 1")


CASES = (
    Case("ws", 128, 128, 128, 128, 512),
    Case("ws", 128, 128, 128, 128, 4096),
    Case("os", 128, 128, 128, 128, 512),
    Case("is", 128, 128, 128, 128, 512),
    Case("ws", 8, 8, 64, 64, 64),
    Case("os", 8, 8, 64, 64, 64),
    Case("is", 8, 8, 64, 64, 64),
    Case("ws", 32, 32, 128, 128, 512),
)


def operands(case: Case) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    stationary = rng.uniform(-1.0, 1.0, (case.k, case.m)).astype(np.float32)
    moving = rng.uniform(-1.0, 1.0, (case.k, case.n)).astype(np.float32)
    return stationary, moving


def best_seconds(run, repeats: int = REPEATS) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    print(f"{'flow':4s} {'array':>7s} {'K x M x N':>16s} {'folds':>5s} {'cycles':>8s} "
          f"{'PE-updates':>11s} {'ms':>8s} {'PE-updates/s':>13s} {'array PE-cyc/s':>14s}")
    for case in CASES:
        array = SystolicArray(case.rows, case.cols, case.dataflow)
        stationary, moving = operands(case)
        result = simulate(array, stationary, moving)
        seconds = best_seconds(lambda a=array, s=stationary, v=moving: simulate(a, s, v))
        array_cycles = case.rows * case.cols * result.total_cycles
        print(f"{case.dataflow:4s} {case.rows:>3d}x{case.cols:<3d} "
              f"{f'{case.k}x{case.m}x{case.n}':>16s} {len(result.fold_cycles):5d} "
              f"{result.total_cycles:8d} {result.pe_updates:11d} {seconds * 1e3:8.2f} "
              f"{result.pe_updates / seconds:13.3e} {array_cycles / seconds:14.3e}")

    # The plain-Python reference, for scale: it steps every PE of the array every cycle.
    small = Case("ws", 8, 8, 16, 16, 16)
    array = SystolicArray(small.rows, small.cols, small.dataflow)
    stationary, moving = operands(small)
    reference = simulate_reference(array, stationary, moving)
    seconds = best_seconds(lambda: simulate_reference(array, stationary, moving), repeats=1)
    print(f"reference (plain Python) ws 8x8 16x16x16: {reference.pe_updates} PE-cycles in "
          f"{seconds * 1e3:.0f} ms = {reference.pe_updates / seconds:.3e} PE-cycles/s")


if __name__ == "__main__":
    main()
