"""Teaching views of the PE-level systolic array: a text grid per cycle, and why it took so long.

Reads the per-cycle `Frame`s that `emulator.systolic.record` (the slow reference path) produces
and draws, for every PE, the operand registers it holds and its partial sum, what enters at the
left and top edges and what leaves at the right and bottom, the phase, fold and cycle.  The cycle
count is explained per fold as load + fill + stream + drain from `isolated_matmul_cycles` and
held against the recorded frames and the numba `simulate` (SCALE-Sim's folding, arXiv:1811.02883).
No matplotlib here: the images of the same frames live in `emulator.plots`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from emulator.systolic import (
    DATAFLOWS,
    PHASES,
    RECORD_LIMIT,
    Frame,
    SystolicArray,
    SystolicResult,
    isolated_matmul_cycles,
)

CLEAR_SCREEN = "\x1b[H\x1b[2J"  # ANSI: cursor home, erase display
PROMPT = "[Enter/n] next  [b] back  [q] quit > "
VALUE_KINDS = ("int", "float")
INT_RANGE = (-4, 4)  # small integers: every product and sum is exact in fp32, checkable by hand
CELL = 10  # characters inside a PE box


@dataclass(frozen=True)
class Roles:
    """What each register plane and each edge carries in one dataflow, in the view's words."""

    stationary: str  # one-letter label of the `stationary` register plane
    moving: str
    psum: str
    legend: str
    left_in: str  # plane whose values enter at the left edge
    right_out: str
    top_in: dict[str, str]  # phase -> what enters at the top in that phase
    bottom_out: dict[str, str]
    held: str  # the plane that sits still, drawn first in each PE


ROLES: dict[str, Roles] = {
    "ws": Roles("W", "X", "P",
                "W = stationary (weights, held)  X = moving (flows right)  "
                "P = partial sum (flows down)",
                "X", "X", {"load": "W", "compute": "P"}, {"load": "P", "compute": "P"},
                "stationary"),
    "os": Roles("S", "X", "A",
                "S = stationary (flows right)  X = moving (flows down)  "
                "A = accumulator (held, drains down)",
                "S", "S", {"compute": "X", "drain": "A"}, {"compute": "X", "drain": "A"},
                "psum"),
    "is": Roles("S", "X", "P",
                "X = moving (held)  S = stationary (flows right)  P = partial sum (flows down)",
                "S", "S", {"load": "X", "compute": "P"}, {"load": "P", "compute": "P"},
                "moving"),
}

# The accounting of one fold's cycles, in execution order, as the terms isolated_matmul_cycles
# returns; `formula` is checked against its numbers on every use (`fold_timings`).
_Term = tuple[str, str, Callable[[dict[str, int]], int]]
PHASE_TERMS: dict[str, tuple[_Term, ...]] = {
    "ws": (("load", "k", lambda d: d["k"]), ("fill", "rows-1", lambda d: d["rows"] - 1),
           ("stream", "n", lambda d: d["n"]), ("drain", "m-1", lambda d: d["m"] - 1)),
    "os": (("load", "0", lambda d: 0), ("fill", "m+n-2", lambda d: d["m"] + d["n"] - 2),
           ("stream", "k", lambda d: d["k"]), ("drain", "rows", lambda d: d["rows"])),
    "is": (("load", "k", lambda d: d["k"]), ("fill", "rows-1", lambda d: d["rows"] - 1),
           ("stream", "m", lambda d: d["m"]), ("drain", "n-1", lambda d: d["n"] - 1)),
}


# ---- the GEMM and its limits ----------------------------------------------------------------


def check_sizes(**sizes: int) -> None:
    """Every size given (rows, cols, m, k, n, ...) must be an int >= 1; the message names it."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1")


def check_macs_recordable(m: int, k: int, n: int) -> None:
    """Reject a GEMM too big to record before allocating it: every MAC takes a PE-cycle."""
    check_sizes(m=m, k=k, n=n)
    macs = m * k * n
    if macs > RECORD_LIMIT:
        raise ValueError(
            f"m={m} x k={k} x n={n} is {macs} multiply-accumulates; a recording takes at least "
            f"one PE-cycle per MAC and record() keeps at most {RECORD_LIMIT} PE-cycles "
            f"(emulator.systolic.RECORD_LIMIT)")


def check_recordable(array: SystolicArray, total_cycles: int) -> None:
    """The recording limit of `record`, stated in the command's own terms."""
    pe_cycles = array.rows * array.cols * total_cycles
    if pe_cycles > RECORD_LIMIT:
        raise ValueError(
            f"a {array.rows}x{array.cols} array runs this GEMM in {total_cycles} cycles = "
            f"{pe_cycles} PE-cycles, above record()'s limit of {RECORD_LIMIT} PE-cycles "
            f"(emulator.systolic.RECORD_LIMIT); use fewer rows/cols or a smaller GEMM")


def random_gemm(k: int, m: int, n: int, seed: int = 0,
                values: str = "int") -> tuple[np.ndarray, np.ndarray]:
    """stationary[K, M] and moving[K, N] as float32: small integers or uniform [-1, 1)."""
    check_sizes(k=k, m=m, n=n)
    rng = np.random.default_rng(seed)
    if values == "int":
        low, high = INT_RANGE
        return (rng.integers(low, high + 1, (k, m)).astype(np.float32),
                rng.integers(low, high + 1, (k, n)).astype(np.float32))
    if values == "float":
        return (rng.uniform(-1.0, 1.0, (k, m)).astype(np.float32),
                rng.uniform(-1.0, 1.0, (k, n)).astype(np.float32))
    raise ValueError(f"unknown values {values!r}; known: {', '.join(VALUE_KINDS)}")


# ---- what the frames say --------------------------------------------------------------------


@dataclass(frozen=True)
class FoldTiming:
    """One fold: the GEMM ranges its MACs covered and its cycles, term by term."""

    fold: int
    first_cycle: int
    k_range: tuple[int, int]  # inclusive
    m_range: tuple[int, int]
    n_range: tuple[int, int]
    terms: tuple[tuple[str, str, int], ...]  # (phase, formula, cycles) in execution order
    recorded_cycles: int

    @property
    def total(self) -> int:
        return sum(cycles for _, _, cycles in self.terms)

    def phase_at(self, cycle: int) -> tuple[str, int, int]:
        """(term, position from 1, length) of a global cycle inside this fold."""
        offset = cycle - self.first_cycle
        for name, _, cycles in self.terms:
            if offset < cycles:
                return name, offset + 1, cycles
            offset -= cycles
        raise ValueError(f"cycle {cycle} lies after fold {self.fold} "
                         f"(cycles {self.first_cycle}..{self.first_cycle + self.total - 1})")

    def line(self) -> str:
        ranges = "  ".join(f"{d} {lo}..{hi}" for d, (lo, hi) in
                           zip("kmn", (self.k_range, self.m_range, self.n_range)))
        terms = " + ".join(f"{name} {cycles} ({formula})" for name, formula, cycles in self.terms)
        return f"fold {self.fold}  {ranges}:  {terms} = {self.total} cycles"


def fold_timings(array: SystolicArray, frames: list[Frame]) -> list[FoldTiming]:
    """Per fold: the (k, m, n) ranges its recorded MACs cover and its cycles, explained.

    Raises if the closed form, the formula shown beside it and the recording disagree.
    """
    timings = []
    for fold in sorted({f.fold for f in frames}):
        mine = [f for f in frames if f.fold == fold]
        done = np.concatenate([f.mac_index[f.mac] for f in mine])
        if done.size == 0:
            raise RuntimeError(f"fold {fold} recorded no multiply-accumulate")
        lo, hi = done.min(axis=0), done.max(axis=0)
        k, m, n = (int(v) for v in hi - lo + 1)
        phases = isolated_matmul_cycles(array, k, m, n)
        sizes = {"k": k, "m": m, "n": n, "rows": array.rows, "cols": array.cols}
        terms = []
        for name, formula, value in PHASE_TERMS[array.dataflow]:
            if value(sizes) != phases[name]:
                raise RuntimeError(
                    f"{array.dataflow} {name} is {phases[name]} cycles, but the view's formula "
                    f"{formula} gives {value(sizes)} for {sizes}")
            terms.append((name, formula, phases[name]))
        timing = FoldTiming(fold, mine[0].cycle, (int(lo[0]), int(hi[0])),
                            (int(lo[1]), int(hi[1])), (int(lo[2]), int(hi[2])), tuple(terms),
                            len(mine))
        if timing.total != timing.recorded_cycles:
            raise RuntimeError(f"fold {fold}: closed form {timing.total} cycles, recorded "
                               f"{timing.recorded_cycles}")
        timings.append(timing)
    return timings


def accumulate_outputs(frames: list[Frame], m: int, n: int) -> np.ndarray:
    """out[M, N] as PSUM collects it: every finished value leaving the bottom edge, added in fp32
    in the order the folds deliver it."""
    out = np.zeros((m, n), np.float32)
    for frame in frames:
        for c in np.flatnonzero(frame.out_index[:, 0] >= 0):
            i, j = frame.out_index[c]
            out[i, j] = out[i, j] + frame.bottom_out[c]
    return out


def error_bound(stationary: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """|fp32 result - exact| bound: (K+1) eps32 (|S|^T |M|), the classic bound for K rounded
    products summed in order (Higham, Accuracy and Stability, 3.1), with room for PSUM adds."""
    k = stationary.shape[0]
    magnitude = np.abs(stationary.astype(np.float64)).T @ np.abs(moving.astype(np.float64))
    return (k + 1) * np.finfo(np.float32).eps * magnitude


# ---- the text grid ----------------------------------------------------------------------------


def _fmt(value: float, values: str) -> str:
    return f"{value:.0f}" if values == "int" else f"{value:.2f}"


def _planes(array: SystolicArray, frame: Frame) -> list[tuple[str, np.ndarray]]:
    roles = ROLES[array.dataflow]
    planes = {"stationary": (roles.stationary, frame.stationary),
              "moving": (roles.moving, frame.moving), "psum": (roles.psum, frame.psum)}
    return [planes[roles.held]] + [p for name, p in planes.items() if name != roles.held]


def frame_header(frame: Frame, timing: FoldTiming, last_cycle: int, folds: int) -> str:
    """The cycle, fold, phase (and its term of the cycle count) and MACs of one frame."""
    term, position, length = timing.phase_at(frame.cycle)
    ranges = ", ".join(f"{d} {lo}..{hi}" for d, (lo, hi) in
                       zip("kmn", (timing.k_range, timing.m_range, timing.n_range)))
    return (f"cycle {frame.cycle} of 0..{last_cycle}   fold {frame.fold} of 0..{folds - 1} "
            f"({ranges})   "
            f"phase {frame.phase} ({term} {position}/{length})   "
            f"{int(frame.mac.sum())} MACs")


def render_frame(array: SystolicArray, frame: Frame, timing: FoldTiming, last_cycle: int,
                 folds: int, values: str = "int") -> str:
    """The array at the end of one cycle as text: a box per PE, edge traffic around the grid.

    In each box: the (k,m,n) of the MAC the PE did this cycle (marked *), then its registers,
    the held one first.  Left of a row: the value entering it; right: the value leaving it.
    Above a column: the value entering it; below: the value leaving it and, when it is a
    finished output handed to PSUM, which one.
    """
    roles = ROLES[array.dataflow]
    if frame.phase not in roles.top_in:
        raise ValueError(f"{array.dataflow} has no {frame.phase} phase; known: "
                         f"{', '.join(p for p in PHASES if p in roles.top_in)}")
    planes = _planes(array, frame)
    margin = 12
    box = CELL + 2
    lines = [frame_header(frame, timing, last_cycle, folds), ""]

    def edge_row(label: str, plane: str, valid: np.ndarray, data: np.ndarray,
                 arrow: str) -> str:
        cells = [f"{arrow} {plane} {_fmt(v, values)}" if ok else ""
                 for ok, v in zip(valid, data)]
        return f"{label:>{margin}}" + " ".join(f"{cell:^{box}}" for cell in cells)

    lines.append(edge_row("top in ", roles.top_in[frame.phase], frame.top_in_valid,
                          frame.top_in, "v"))
    border = " " * margin + " ".join(["+" + "-" * CELL + "+"] * array.cols)
    lines.append(border)
    for r in range(array.rows):
        macs = []
        for c in range(array.cols):
            k, m, n = frame.mac_index[r, c]
            macs.append(f"*{k},{m},{n}" if frame.mac[r, c] else "")
        content = [macs] + [[f"{label} {_fmt(v, values):>{CELL - 2}}" for v in plane[r]]
                            for label, plane in planes]
        for line_no, cells in enumerate(content):
            left = right = ""
            if line_no == 2:
                if frame.left_in_valid[r]:
                    left = f"{roles.left_in} {_fmt(frame.left_in[r], values)} > "
                if frame.right_out_valid[r]:
                    right = f" > {roles.right_out} {_fmt(frame.right_out[r], values)}"
            lines.append(f"{left:>{margin}}" + " ".join(f"|{cell:<{CELL}}|" for cell in cells)
                         + right)
        lines.append(border)
    lines.append(edge_row("bottom out ", roles.bottom_out[frame.phase], frame.bottom_out_valid,
                          frame.bottom_out, "v"))
    finished = [f"out[{m},{n}]" if m >= 0 else "" for m, n in frame.out_index]
    if any(finished):
        lines.append(f"{'to PSUM ':>{margin}}" + " ".join(f"{cell:^{box}}" for cell in finished))
    return "\n".join(lines)


# ---- the summary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The recorded result against numpy, and the cycle count against the numba model."""

    max_error: float
    passed: bool
    total_cycles: int
    macs: int
    text: str


def summarise(array: SystolicArray, frames: list[Frame], timings: list[FoldTiming],
              stationary: np.ndarray, moving: np.ndarray, fast: SystolicResult) -> Verdict:
    """Check the recorded outputs against numpy and explain the cycle count, fold by fold."""
    (k, m), n = stationary.shape, moving.shape[1]
    out = accumulate_outputs(frames, m, n)
    exact = stationary.astype(np.float64).T @ moving.astype(np.float64)
    error = np.abs(out.astype(np.float64) - exact)
    bound = error_bound(stationary, moving)
    passed = bool(np.all(error <= bound))
    total = sum(t.total for t in timings)
    if total != len(frames) or total != fast.total_cycles or tuple(
            t.total for t in timings) != fast.fold_cycles:
        raise RuntimeError(
            f"cycle counts disagree: closed form {[t.total for t in timings]}, recorded "
            f"{len(frames)} frames, numba simulate() {list(fast.fold_cycles)}")
    macs = int(sum(int(f.mac.sum()) for f in frames))
    flow = DATAFLOWS[array.dataflow]
    lines = [
        f"result: out[{m},{n}] = stationary[{k},{m}].T @ moving[{k},{n}] as PSUM collected it "
        f"from the bottom edge",
        f"  max |error| vs numpy (float64) = {error.max():.3g}; allowed per element "
        f"(K+1)*eps32*(|S|^T|M|), at most {bound.max():.3g}: {'PASS' if passed else 'FAIL'}",
        f"cycles ({array.dataflow}, {flow.summary}; {array.rows}x{array.cols} array, "
        f"{len(timings)} fold{'s' if len(timings) > 1 else ''}):",
    ]
    lines += [f"  {t.line()}" for t in timings]
    lines.append(f"  total {' + '.join(str(t.total) for t in timings)} = {total} cycles "
                 f"(recorded frames {len(frames)}, numba simulate() {fast.total_cycles})")
    pe_cycles = array.rows * array.cols * total
    lines.append(f"PE utilisation: {macs} MACs / ({array.rows} x {array.cols} PEs x {total} "
                 f"cycles) = {100 * macs / pe_cycles:.1f}%")
    return Verdict(float(error.max()), passed, total, macs, "\n".join(lines))


# ---- stepping ----------------------------------------------------------------------------------


def step_through(pages: list[str], read_line: Callable[[], str], write: Callable[[str], None],
                 clear: bool) -> int:
    """Show one page at a time: Enter or n advances, b goes back, q (or end of input) quits.

    Enter on the last page ends the walk too.  Returns the index of the page shown last.
    """
    if not pages:
        raise ValueError("nothing to step through: no pages")
    index, redraw = 0, True
    while True:
        if redraw:
            write((CLEAR_SCREEN if clear else "") + pages[index] + "\n")
        write(PROMPT)
        line = read_line()
        if line == "":  # end of input
            write("\n")
            return index
        key = line.strip().lower()
        redraw = True
        if key in ("", "n"):
            if index == len(pages) - 1:
                return index
            index += 1
        elif key == "b":
            index = max(0, index - 1)
        elif key == "q":
            return index
        else:
            write(f"unknown key {key!r}: Enter or n = next, b = back, q = quit\n")
            redraw = False
