"""The teaching view of the systolic array (`ncemu systolic`, emulator/teaching.py).

What the printed frames show is read back from the text: every multiply-accumulate (k, m, n)
appears exactly once, the finished values handed to PSUM add up to numpy's result, and the
cycle count and its per-fold explanation equal the numba model's.  The stepper is driven in a
real pseudo-terminal.  Bad arguments fail with messages that name the value and the limit.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.cli import main
from emulator.systolic import RECORD_LIMIT, SystolicArray, record, simulate
from emulator.teaching import (
    CLEAR_SCREEN,
    PROMPT,
    accumulate_outputs,
    check_sizes,
    error_bound,
    fold_timings,
    random_gemm,
    render_frame,
    step_through,
)

REPO = Path(__file__).resolve().parents[1]
HEADER = re.compile(r"^cycle (\d+) of 0\.\.(\d+) ", re.M)
MAC = re.compile(r"\*(\d+),(\d+),(\d+)")
FOLD_LINE = re.compile(r"^  fold (\d+) .*= (\d+) cycles$", re.M)
TOTAL = re.compile(r"^  total .* = (\d+) cycles \(recorded frames (\d+), numba simulate\(\) "
                   r"(\d+)\)$", re.M)


def gemms():
    """A dataflow, an array of up to 4x4 and a GEMM of up to 6 in each dim, often folding."""
    return st.tuples(st.sampled_from(("ws", "os", "is")), st.integers(1, 4), st.integers(1, 4),
                     st.integers(1, 6), st.integers(1, 6), st.integers(1, 6),
                     st.integers(0, 2**16))


def run_command(*argv: str) -> tuple[int, str, str]:
    """`ncemu systolic ARGV`: exit status, stdout, stderr (captured per call, for hypothesis)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["systolic", *argv])
    return status, out.getvalue(), err.getvalue()


def frame_pages(out: str) -> list[str]:
    """The printed frames: from one header to the next (the last one ends at the summary)."""
    starts = [m.start() for m in HEADER.finditer(out)]
    end = out.index("result: ")
    return [out[a:b] for a, b in zip(starts, starts[1:] + [end])]


def psum_deliveries(page: str) -> list[tuple[int, int, float]]:
    """(m, n, value) of every finished output a printed frame hands to PSUM.

    The value is printed in the 'bottom out' line above the 'to PSUM' line, centred over the
    same column, so each out[m,n] pairs with the value whose centre is nearest.
    """
    lines = page.splitlines()
    deliveries = []
    for number, line in enumerate(lines):
        if not line.lstrip().startswith("to PSUM"):
            continue
        values = [((v.start() + v.end()) / 2, float(v.group(1)))
                  for v in re.finditer(r"v \w (-?[\d.]+)", lines[number - 1])]
        for out in re.finditer(r"out\[(\d+),(\d+)\]", line):
            centre = (out.start() + out.end()) / 2
            _, value = min(values, key=lambda v: abs(v[0] - centre))
            deliveries.append((int(out.group(1)), int(out.group(2)), value))
    return deliveries


@given(gemms())
def test_printed_frames_show_every_mac_once_and_sum_to_numpy(case):
    dataflow, rows, cols, k, m, n, seed = case
    status, out, err = run_command(
        "--dataflow", dataflow, "--rows", str(rows), "--cols", str(cols), "--m", str(m),
        "--k", str(k), "--n", str(n), "--seed", str(seed), "--values", "int")
    assert status == 0, err
    stationary, moving = random_gemm(k, m, n, seed, "int")
    fast = simulate(SystolicArray(rows, cols, dataflow), stationary, moving)

    pages = frame_pages(out)
    cycles = [int(HEADER.search(page).group(1)) for page in pages]
    assert cycles == list(range(fast.total_cycles))
    assert {int(HEADER.search(page).group(2)) for page in pages} == {fast.total_cycles - 1}

    # Every MAC of the GEMM is shown exactly once, in some PE, in some cycle.
    shown = Counter(tuple(int(v) for v in mac.groups()) for mac in MAC.finditer(out))
    assert shown == Counter({(kk, mm, nn): 1 for kk in range(k) for mm in range(m)
                             for nn in range(n)})

    # What the frames hand to PSUM, added up, is numpy's result: integers in [-4, 4] make every
    # product and partial sum exact in fp32 and in the printed text, so the tolerance is zero.
    psum = np.zeros((m, n))
    for page in pages:
        for i, j, value in psum_deliveries(page):
            psum[i, j] += value
    np.testing.assert_array_equal(psum, stationary.T.astype(np.float64) @ moving)

    # The printed count and its per-fold explanation are the numba model's.
    total = TOTAL.search(out)
    assert total is not None, out[-2000:]
    assert [int(v) for v in total.groups()] == [fast.total_cycles] * 3
    folds = [(int(a), int(b)) for a, b in FOLD_LINE.findall(out)]
    assert folds == list(enumerate(fast.fold_cycles))
    assert f"PE utilisation: {k * m * n} MACs / ({rows} x {cols} PEs x {fast.total_cycles} " \
           f"cycles) = {100 * k * m * n / (rows * cols * fast.total_cycles):.1f}%" in out
    assert "PASS" in out


@given(gemms())
def test_recorded_float_gemm_accumulates_to_numpy(case):
    dataflow, rows, cols, k, m, n, seed = case
    array = SystolicArray(rows, cols, dataflow)
    stationary, moving = random_gemm(k, m, n, seed, "float")
    frames = record(array, stationary, moving)
    done = Counter(tuple(int(v) for v in f.mac_index[r, c])
                   for f in frames for r, c in zip(*np.nonzero(f.mac)))
    assert done == Counter({(kk, mm, nn): 1 for kk in range(k) for mm in range(m)
                            for nn in range(n)})
    # Tolerance: K fp32 roundings of products and sums, |error| <= (K+1) eps32 (|S|^T |M|).
    exact = stationary.T.astype(np.float64) @ moving.astype(np.float64)
    error = np.abs(accumulate_outputs(frames, m, n) - exact)
    assert np.all(error <= error_bound(stationary, moving))
    assert np.all(error_bound(stationary, moving) <= (k + 1) * k * np.finfo(np.float32).eps)
    # The explanation adds up to the recording, fold by fold.
    timings = fold_timings(array, frames)
    assert tuple(t.total for t in timings) == simulate(array, stationary, moving).fold_cycles


def test_default_ws_case_cycle_arithmetic():
    status, out, _ = run_command()
    assert status == 0
    # ws, 4x4 array, out[6,5], K=4: M=6 folds over 4 columns into m=4 and m=2.
    # fold 0: load k=4 + fill rows-1=3 + stream n=5 + drain m-1=3 = 15
    # fold 1: load 4 + fill 3 + stream 5 + drain 1 = 13;  total 28 cycles, 120 MACs.
    assert ("fold 0  k 0..3  m 0..3  n 0..4:  load 4 (k) + fill 3 (rows-1) + stream 5 (n) + "
            "drain 3 (m-1) = 15 cycles") in out
    assert ("fold 1  k 0..3  m 4..5  n 0..4:  load 4 (k) + fill 3 (rows-1) + stream 5 (n) + "
            "drain 1 (m-1) = 13 cycles") in out
    assert "total 15 + 13 = 28 cycles" in out
    assert "PE utilisation: 120 MACs / (4 x 4 PEs x 28 cycles) = 26.8%" in out
    assert "max |error| vs numpy (float64) = 0;" in out
    assert CLEAR_SCREEN not in out  # not a terminal: plain text


def test_frame_shows_edges_and_phase():
    array = SystolicArray(2, 2, "ws")
    stationary = np.array([[1, 2], [3, 4]], np.float32)  # [K=2, M=2]
    moving = np.array([[1, -1], [2, -2]], np.float32)  # [K=2, N=2]
    frames = record(array, stationary, moving)
    timings = fold_timings(array, frames)
    # ws: load 2 + fill 1 + stream 2 + drain 1 = 6 cycles.  Cycle 0 loads weight row 1 (last
    # row first) from the top; cycle 2 is the first compute cycle: moving[0, 0] = 1 enters row 0.
    load = render_frame(array, frames[0], timings[0], 5, 1)
    assert "cycle 0 of 0..5" in load and "phase load (load 1/2)" in load
    assert re.search(r"v W 3 +v W 4", load)
    first = render_frame(array, frames[2], timings[0], 5, 1)
    assert "phase compute (fill 1/1)" in first and "1 MACs" in first
    assert "X 1 > |X" in first and "*0,0,0" in first
    # Cycle 3: PE(1,0) finishes out[0,0] = 1*1 + 3*2 = 7, which leaves the bottom of column 0.
    leaving = render_frame(array, frames[3], timings[0], 5, 1)
    assert "v P 7" in leaving and "out[0,0]" in leaving


def test_step_through_keys():
    pages = ["page 0", "page 1", "page 2"]
    shown: list[str] = []
    keys = iter(["\n", "x\n", "n\n", "b\n", "b\n", "b\n", "\n", "\n", "\n"])
    last = step_through(pages, lambda: next(keys), shown.append, clear=False)
    drawn = [s for s in shown if s.startswith("page")]
    # Enter, unknown key (no redraw), n, b, b, b (stays at 0), Enter, Enter, Enter on the last.
    assert drawn == ["page 0\n", "page 1\n", "page 2\n", "page 1\n", "page 0\n", "page 0\n",
                     "page 1\n", "page 2\n"]
    assert last == 2
    assert any("unknown key 'x'" in s for s in shown)
    assert shown.count(PROMPT) == 9


def test_step_through_quits_on_q_and_end_of_input_and_clears_a_terminal():
    shown: list[str] = []
    keys = iter(["q\n"])
    assert step_through(["a", "b"], lambda: next(keys), shown.append, clear=True) == 0
    assert shown[0] == CLEAR_SCREEN + "a\n"
    assert step_through(["a", "b"], lambda: "", [].append, clear=False) == 0
    with pytest.raises(ValueError, match="no pages"):
        step_through([], lambda: "", print, clear=False)


def _read_until(fd: int, needle: str, seen: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in seen[-1]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {needle!r}; got:\n{''.join(seen)[-800:]}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536).decode("utf-8", "replace")
            except OSError:  # the child closed the terminal
                chunk = ""
            if not chunk:
                raise AssertionError(f"terminal closed before {needle!r}:\n{''.join(seen)[-800:]}")
            seen[-1] += chunk


def test_step_mode_in_a_real_terminal():
    controller, terminal = os.openpty()
    env = {**os.environ, "TERM": "xterm", "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "systolic", "--step", "--rows", "2", "--cols",
         "2", "--m", "2", "--k", "2", "--n", "2"],
        stdin=terminal, stdout=terminal, stderr=terminal, cwd=REPO, env=env, close_fds=True)
    os.close(terminal)
    screens = [""]
    try:
        for key in ("\r", "\r", "b\r", "q\r"):
            _read_until(controller, PROMPT, screens)
            screens.append("")
            os.write(controller, key.encode())
        _read_until(controller, "PE utilisation", screens)
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
        os.close(controller)
    # Each screen is what one key press brought; on a terminal a frame follows a clear-screen.
    shown = [int(cycle) for screen in screens[:4]
             for cycle in re.findall(r"cycle (\d+) of 0\.\.", screen)]
    assert shown == [0, 1, 2, 1]
    assert CLEAR_SCREEN in screens[0]  # a terminal: each frame on a fresh screen
    assert "PASS" in screens[-1]


@pytest.mark.parametrize("argv, fragments", [
    (["--rows", "0"], ["--rows=0", ">= 1"]),
    (["--cols", "-3"], ["--cols=-3", ">= 1"]),
    (["--m", "0"], ["--m=0", ">= 1"]),
    (["--k", "0"], ["--k=0", ">= 1"]),
    (["--n", "-1"], ["--n=-1", ">= 1"]),
    (["--fps", "0"], ["--fps 0", "> 0"]),
    (["--m", "200", "--k", "100", "--n", "100"],
     ["m=200 x k=100 x n=100", "2000000", f"{RECORD_LIMIT}"]),
    # ws, one fold: load 64 + fill 63 + stream 64 + drain 63 = 254 cycles on 64x64 PEs.
    (["--rows", "64", "--cols", "64", "--m", "64", "--k", "64", "--n", "64"],
     ["64x64", "254 cycles", f"{64 * 64 * 254} PE-cycles", f"{RECORD_LIMIT}"]),
    (["--gif", "wave.png"], ["--gif wave.png", ".gif"]),
    (["--gif", "no/such/dir/wave.gif"], ["no/such/dir", "does not exist"]),
    (["--png-dir", __file__], [f"--png-dir {__file__}", "not a directory"]),
])
def test_bad_arguments_fail_naming_value_and_limit(argv, fragments):
    status, out, err = run_command(*argv)
    assert status == 1
    assert err.startswith("ncemu systolic: error: ")
    for fragment in fragments:
        assert fragment in err
    assert "cycle 0" not in out


def test_unknown_dataflow_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["systolic", "--dataflow", "xs"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'xs'" in capsys.readouterr().err


def test_helpers_reject_bad_values():
    with pytest.raises(ValueError, match=r"rows=0 must be >= 1"):
        check_sizes(rows=0)
    with pytest.raises(TypeError, match=r"k must be an int, got 2.5"):
        check_sizes(k=2.5)
    with pytest.raises(ValueError, match=r"unknown values 'complex'; known: int, float"):
        random_gemm(2, 2, 2, values="complex")
    array = SystolicArray(2, 2, "ws")
    frames = record(array, *random_gemm(2, 2, 2))
    timing = fold_timings(array, frames)[0]
    with pytest.raises(ValueError, match=r"cycle 6 lies after fold 0 \(cycles 0\.\.5\)"):
        timing.phase_at(6)
