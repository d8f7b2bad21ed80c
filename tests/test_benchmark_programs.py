"""The programs the speed benchmarks time are real programs: valid, race-free, deadlock-free."""

from __future__ import annotations

import pytest

from benchmarks.timing_speed import pipeline_program, rates
from emulator.runner import run


@pytest.mark.parametrize("size", [50, 1000])
def test_the_timed_pipeline_is_race_free_and_runs_to_the_end(size):
    program = pipeline_program(size)
    steps = size // 11
    # 11 records a step, less the waits for slots (first 8 steps) and banks (first 4) that
    # are still free, plus the final wait for the last drain.
    assert program.instruction_count == 11 * steps - min(steps, 8) - min(steps, 4) + 1
    result = run(program, functional=False)  # validates and checks races first
    counts = result.report.cores[0].engines
    assert counts["tensor"].instructions == steps  # one matmul a step
    assert counts["vector"].instructions == steps  # one drain a step


def test_rates_count_instructions_per_second_of_each_scope():
    seconds = {"validate": 0.1, "races": 0.2, "encode": 0.3, "schedule": 0.1, "report": 0.05}
    got = rates(1000, seconds)
    assert got["emulate_per_s"] == pytest.approx(1000 / 0.4)
    assert got["run_per_s"] == pytest.approx(1000 / 0.55)
    assert got["run_with_race_check_per_s"] == pytest.approx(1000 / 0.75)


def test_the_speed_suite_draws_the_timing_rates(tmp_path):
    from benchmarks.speed import plot_timing

    rows = [{"instructions": n, "emulate_per_s": 5e6, "run_per_s": 2e6,
             "run_with_race_check_per_s": 1.2e6} for n in (10_000, 100_000)]
    path = plot_timing(rows, tmp_path / "plots" / "timing.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
