"""PE-level systolic array: every operand register of every processing element, cycle by cycle.

Computes ``out[M, N] = stationary[K, M].T @ moving[K, N]`` the way the NeuronCore Tensor engine
lays it out (K on array rows / SBUF partitions, M on array columns, N streamed in time [A2]) in
three dataflows: weight-, output- and input-stationary, with the GEMM folded over the array as
SCALE-Sim does (Samajdar et al., "SCALE-Sim", arXiv:1811.02883).  Products and accumulation are
fp32, in order k = 0..K-1 down each column; fold results are added into PSUM in fp32.

Clock.  Cycle numbers are global: cycle 0 is the first cycle of the first fold (its weight load
for ws/is, its first MAC for os); folds run one after another without overlap.  Inside a fold,
"compute cycle t" counts from the cycle in which the first streamed element enters PE(0, 0).
A PE does its work for cycle t from the registers its left and upper neighbours latched at the
end of cycle t-1, and latches its own results at the end of cycle t.  An output "leaves the
array" in the cycle in which the bottom PE of its column hands it to PSUM, which takes it at the
end of that cycle (ws/is: the cycle that PE adds the last product; os: a drain cycle).

Weight-stationary ("ws", the Tensor engine's dataflow).  One fold holds k <= rows, m <= cols.
  load   k cycles: the tile is shifted in from the top edge, one row per cycle, last row first,
         through rows 0..k-1 only (rows below k are disabled: they pass partial sums through
         unchanged and never use their weight register, so they need no load).
  PE(r, c) multiplies moving[r, j] in compute cycle j + r + c (row r gets vector j one cycle
  after row r-1 does; operands move right one PE per cycle, partial sums down one PE per cycle).
  Partial sums cross all `rows` physical rows, so output (m, j) leaves the bottom of column m in
      exit(m, j) = fold_start + k + (j + m + rows - 1)
  fill = rows - 1 (until the first sum leaves), stream = n (one vector per cycle),
  drain = m - 1 (the skew of the last column):  fold cycles = k + rows + n + m - 2.
Output-stationary ("os").  One fold holds m <= rows outputs by n <= cols outputs; K streams.
  PE(i, j) owns out[i, j].  stationary[:, i] enters row i from the left and moving[:, j] enters
  column j from the top, both skewed: PE(i, j) multiplies element k in compute cycle k + i + j.
  No load.  After the last MAC the accumulators shift down one row per cycle (zeros enter at the
  top) and leave through the bottom edge, crossing all physical rows:
      exit(i, j) = fold_start + (k + m + n - 2) + (rows - 1 - i)
  fill = m + n - 2 (until the last PE starts), stream = k, drain = rows:
  fold cycles = k + rows + m + n - 2.
Input-stationary ("is").  One fold holds k <= rows by n <= cols of the *moving* tile; M streams.
  The ws array with the operands' roles swapped: PE(r, c) holds moving[r, c] (loaded in k
  cycles from the top); column i of the stationary tensor enters row r in compute cycle i + r
  and moves right; partial sums move down and out[i, c] leaves the bottom of column c in
      exit(i, c) = fold_start + k + (i + c + rows - 1)
  fill = rows - 1, stream = m, drain = n - 1:  fold cycles = k + rows + m + n - 2.
Folding.  ws tiles (K over rows, M over cols), os (M over rows, N over cols), is (K over rows,
N over cols); column tiles outer, row tiles inner, so K folds of one output tile follow each
other and are added into PSUM in k order.

Two implementations of the same machine: `simulate` (numba) moves the registers of the PEs on
the active wavefront only and counts what it touches in `pe_updates`; `simulate_reference` /
`record` (plain Python, the living definition) step every PE of the physical array and carry
index tags with each operand, so the tests can check that each MAC meets the right operands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numba
import numpy as np

# record() keeps a full snapshot per cycle; beyond this many PE-cycles it is not a teaching view.
RECORD_LIMIT = 1_000_000

PHASES = ("load", "compute", "drain")


@dataclass(frozen=True)
class SystolicArray:
    """A rows x cols grid of multiply-accumulate PEs and the dataflow it runs."""

    rows: int = 128
    cols: int = 128
    dataflow: str = "ws"

    def __post_init__(self) -> None:
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"array {name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"array {name} {value} must be >= 1")
        if self.dataflow not in DATAFLOWS:
            raise ValueError(
                f"unknown dataflow {self.dataflow!r}; known: {', '.join(sorted(DATAFLOWS))}")


@dataclass(frozen=True)
class SystolicResult:
    """What one simulated GEMM produced and how long it took on the array."""

    output: np.ndarray  # [M, N] float32
    total_cycles: int  # all folds, including weight loads
    load_cycles: int  # cycles spent preloading stationary operands (all folds)
    fold_cycles: tuple[int, ...]  # per fold, in execution order
    exit_cycle: np.ndarray  # [M, N] int64: global cycle the output last left the array
    pe_updates: int  # PE-cycles actually stepped by the implementation that produced this
    macs: int  # useful multiply-accumulates performed (= M*N*K)

    def __post_init__(self) -> None:
        if self.output.ndim != 2 or self.output.dtype != np.float32:
            raise ValueError(
                f"output must be a 2-D float32 array, got {self.output.dtype} "
                f"{self.output.shape}")
        if self.exit_cycle.shape != self.output.shape or self.exit_cycle.dtype != np.int64:
            raise ValueError(
                f"exit_cycle must be int64 of the output's shape {self.output.shape}, got "
                f"{self.exit_cycle.dtype} {self.exit_cycle.shape}")
        if self.total_cycles != sum(self.fold_cycles):
            raise ValueError(
                f"total_cycles {self.total_cycles} != sum of fold_cycles {sum(self.fold_cycles)}")
        if not 0 <= self.load_cycles <= self.total_cycles:
            raise ValueError(
                f"load_cycles {self.load_cycles} must lie in [0, {self.total_cycles}]")
        if self.exit_cycle.min() < 0 or self.exit_cycle.max() >= self.total_cycles:
            raise ValueError(
                f"exit cycles span [{self.exit_cycle.min()}, {self.exit_cycle.max()}], "
                f"outside [0, {self.total_cycles})")
        if self.pe_updates < 0 or self.macs < 0:
            raise ValueError(f"negative counts: pe_updates {self.pe_updates}, macs {self.macs}")


@dataclass(frozen=True)
class Frame:
    """Every register of the array at the end of one cycle, plus what crossed its edges.

    Register planes are named after the tensor whose elements they carry: in ws `stationary`
    holds the weights and `moving` flows right; in os both flow (stationary right, moving down)
    and `psum` is the output accumulator; in is `moving` is held and `stationary` flows right.
    Edge values are those entering the edge PEs in this cycle (`left_in`, `top_in`) and those the
    edge PEs hand on at its end (`right_out`, `bottom_out`); `*_valid` says which carry data.
    """

    cycle: int  # global cycle number
    fold: int
    phase: str  # "load", "compute" or "drain"
    stationary: np.ndarray  # [rows, cols] float32
    moving: np.ndarray  # [rows, cols] float32
    psum: np.ndarray  # [rows, cols] float32
    left_in: np.ndarray  # [rows] float32
    left_in_valid: np.ndarray  # [rows] bool
    top_in: np.ndarray  # [cols] float32
    top_in_valid: np.ndarray  # [cols] bool
    right_out: np.ndarray  # [rows] float32
    right_out_valid: np.ndarray  # [rows] bool
    bottom_out: np.ndarray  # [cols] float32
    bottom_out_valid: np.ndarray  # [cols] bool
    mac: np.ndarray  # [rows, cols] bool: the PE did a useful multiply-accumulate
    mac_index: np.ndarray  # [rows, cols, 3] int64: (k, m, n) of that MAC, -1 elsewhere
    out_index: np.ndarray  # [cols, 2] int64: (m, n) of a finished output leaving, -1 elsewhere

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase {self.phase!r}; known: {', '.join(PHASES)}")
        rows, cols = self.stationary.shape
        expected = {
            "moving": (rows, cols), "psum": (rows, cols), "mac": (rows, cols),
            "mac_index": (rows, cols, 3), "left_in": (rows,), "left_in_valid": (rows,),
            "right_out": (rows,), "right_out_valid": (rows,), "top_in": (cols,),
            "top_in_valid": (cols,), "bottom_out": (cols,), "bottom_out_valid": (cols,),
            "out_index": (cols, 2),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"frame field {name} has shape {getattr(self, name).shape}, expected {shape} "
                    f"for a {rows}x{cols} array")

    def line(self) -> str:
        """One line per cycle, for traces."""
        leaving = [f"({m},{n})" for m, n in self.out_index if m >= 0]
        return (f"cycle {self.cycle:5d} fold {self.fold:3d} {self.phase:7s} "
                f"{int(self.mac.sum()):5d} MACs  out {' '.join(leaving) or '-'}")


# ---- folding ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fold:
    """One tile of the GEMM that fits the array: offsets and sizes along k, m and n."""

    k0: int
    k: int
    m0: int
    m: int
    n0: int
    n: int


def _folds(array: SystolicArray, k: int, m: int, n: int) -> list[_Fold]:
    """Folds in execution order: column tiles outer, row tiles inner (as the kernels run)."""
    flow = DATAFLOWS[array.dataflow]
    extent = {"k": k, "m": m, "n": n}
    rows_extent, cols_extent = extent[flow.row_dim], extent[flow.col_dim]
    folds = []
    for col0 in range(0, cols_extent, array.cols):
        for row0 in range(0, rows_extent, array.rows):
            start = {"k": 0, "m": 0, "n": 0, flow.row_dim: row0, flow.col_dim: col0}
            size = {**extent, flow.row_dim: min(array.rows, rows_extent - row0),
                    flow.col_dim: min(array.cols, cols_extent - col0)}
            folds.append(_Fold(start["k"], size["k"], start["m"], size["m"], start["n"], size["n"]))
    return folds


# ---- closed-form timing of one fold (the analytic model) ------------------------------------


def _held_stream_phases(rows: int, k: int, cols_used: int, streamed: int) -> dict[str, int]:
    # ws and is: load k rows from the top; partial sums cross every physical row.
    phases = {"load": k, "fill": rows - 1, "stream": streamed, "drain": cols_used - 1}
    phases["total"] = sum(phases.values())
    return phases


def _ws_phases(rows: int, k: int, m: int, n: int) -> dict[str, int]:
    return _held_stream_phases(rows, k, cols_used=m, streamed=n)


def _is_phases(rows: int, k: int, m: int, n: int) -> dict[str, int]:
    return _held_stream_phases(rows, k, cols_used=n, streamed=m)


def _os_phases(rows: int, k: int, m: int, n: int) -> dict[str, int]:
    # Nothing to preload; accumulators drain down through every physical row.
    phases = {"load": 0, "fill": m + n - 2, "stream": k, "drain": rows}
    phases["total"] = sum(phases.values())
    return phases


def isolated_matmul_cycles(array: SystolicArray, k: int, m: int, n: int) -> dict[str, int]:
    """Closed-form load/fill/stream/drain/total cycles of ONE fold; equals `simulate`'s count."""
    if not isinstance(array, SystolicArray):
        raise TypeError(f"array must be a SystolicArray, got {type(array).__name__}")
    for name, value in (("k", k), ("m", m), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"matmul dimension {name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"matmul dimension {name}={value} must be >= 1")
    flow = DATAFLOWS[array.dataflow]
    extent = {"k": k, "m": m, "n": n}
    for dim, limit, what in ((flow.row_dim, array.rows, "rows"),
                             (flow.col_dim, array.cols, "cols")):
        if extent[dim] > limit:
            raise ValueError(
                f"{dim}={extent[dim]} exceeds the array's {what}={limit}: one {array.dataflow} "
                f"fold holds {flow.row_dim} <= rows and {flow.col_dim} <= cols (simulate() folds)")
    return flow.phases(array.rows, k, m, n)


# ---- numba kernels --------------------------------------------------------------------------
# Register buffers are double-buffered (old = latched at the end of the previous cycle, new =
# this cycle's latches) and padded by one edge slot: x[r, 0] is the wire entering row r from
# the left, p[0, c] the wire entering column c from the top (always 0 for partial sums), so the
# inner loop has no edge branch.  Only PEs on the active wavefront are stepped: an active PE
# reads only registers that active PEs latched the cycle before, so idle PEs never matter.
# The per-row loops live in helpers inlined at numba-IR level and take views of exactly the busy
# span: that is the form in which LLVM reliably vectorises them (written inline in the kernels,
# with an offset start, numba's negative-index wraparound and the surrounding control flow kept
# them scalar, at a third of the speed).


@numba.njit(inline="always")
def _ws_row(x_in, x_out, weight, p_in, p_out):
    """One enabled row: take the operand from the left, pass it right, add its product."""
    for c in range(p_out.shape[0]):
        xv = x_in[c]
        x_out[c] = xv
        p_out[c] = p_in[c] + weight[c] * xv  # fp32 multiply, then fp32 add (no fused FMA)


@numba.njit(inline="always")
def _pass_row(p_in, p_out):
    """One disabled row: partial sums pass straight down."""
    for c in range(p_out.shape[0]):
        p_out[c] = p_in[c]


@numba.njit(inline="always")
def _os_row(s_in, s_out, v_in, v_out, acc):
    """One os row: pass both operands on and accumulate their product in place."""
    for j in range(acc.shape[0]):
        sv = s_in[j]
        vv = v_in[j]
        s_out[j] = sv
        v_out[j] = vv
        acc[j] = acc[j] + sv * vv


@numba.njit(cache=True)
def _held_stream_kernel(held, streamed, rows, cols, out, exit_cycle):
    """ws/is: `held` [K, C] tiles sit in the PEs, `streamed` [K, T] columns flow right.

    Writes out[C, T] (accumulated over K folds) and exit_cycle[C, T]; returns
    (load_cycles, fold_cycles, pe_updates, macs).
    """
    k_total, c_total = held.shape
    t_len = streamed.shape[1]
    row_tiles = (k_total + rows - 1) // rows
    col_tiles = (c_total + cols - 1) // cols
    fold_cycles = np.zeros(row_tiles * col_tiles, np.int64)
    weights = np.zeros((rows, cols), np.float32)
    x_old = np.zeros((rows, cols + 1), np.float32)
    x_new = np.zeros((rows, cols + 1), np.float32)
    p_old = np.zeros((rows + 1, cols), np.float32)
    p_new = np.zeros((rows + 1, cols), np.float32)
    clock = 0
    load_cycles = 0
    updates = 0
    macs = 0
    fold = 0
    for ci in range(col_tiles):
        c0 = ci * cols
        cf = min(cols, c_total - c0)
        for ki in range(row_tiles):
            k0 = ki * rows
            kf = min(rows, k_total - k0)
            # Load: tile row kf-1-j enters the top in load cycle j; rows 0..j shift down.
            for j in range(kf):
                for r in range(j, 0, -1):
                    w_dst = weights[r]
                    w_src = weights[r - 1]
                    for c in range(cf):
                        w_dst[c] = w_src[c]
                w_top = weights[0]
                for c in range(cf):
                    w_top[c] = held[k0 + kf - 1 - j, c0 + c]
                updates += (j + 1) * cf
            clock += kf
            load_cycles += kf
            compute = t_len + cf + rows - 2
            for t in range(compute):
                # Left edge: row r (< kf) receives streamed vector t - r.
                for r in range(max(0, t - t_len + 1), min(kf - 1, t) + 1):
                    x_old[r, 0] = streamed[k0 + r, t - r]
                # PE(r, c) is busy with vector t - r - c when that lies in [0, t_len).
                for r in range(max(0, t - (t_len - 1) - (cf - 1)), min(rows - 1, t) + 1):
                    c_lo = max(0, t - r - (t_len - 1))
                    c_end = min(cf - 1, t - r) + 1
                    busy = c_end - c_lo
                    p_out = p_new[r + 1][c_lo:c_end]
                    if r < kf:
                        _ws_row(x_old[r][c_lo:c_end], x_new[r][c_lo + 1:c_end + 1],
                                weights[r][c_lo:c_end], p_old[r][c_lo:c_end], p_out)
                        macs += busy
                    else:
                        _pass_row(p_old[r][c_lo:c_end], p_out)
                    updates += busy
                    if r == rows - 1:
                        # Bottom row: finished sums leave into PSUM, accumulated in fp32.
                        for c in range(busy):
                            m = c0 + c_lo + c
                            j = t - r - c_lo - c
                            out[m, j] = out[m, j] + p_out[c]
                            exit_cycle[m, j] = clock + t
                x_old, x_new = x_new, x_old
                p_old, p_new = p_new, p_old
            clock += compute
            fold_cycles[fold] = kf + compute
            fold += 1
    return load_cycles, fold_cycles, updates, macs


@numba.njit(cache=True)
def _os_kernel(stationary, moving, rows, cols, out, exit_cycle):
    """os: PE(i, j) accumulates out[i, j]; stationary flows right, moving flows down.

    Writes out[M, N] and exit_cycle[M, N]; returns (load_cycles, fold_cycles, pe_updates, macs).
    """
    k_len, m_total = stationary.shape
    n_total = moving.shape[1]
    row_tiles = (m_total + rows - 1) // rows
    col_tiles = (n_total + cols - 1) // cols
    fold_cycles = np.zeros(row_tiles * col_tiles, np.int64)
    s_old = np.zeros((rows, cols + 1), np.float32)
    s_new = np.zeros((rows, cols + 1), np.float32)
    v_old = np.zeros((rows + 1, cols), np.float32)
    v_new = np.zeros((rows + 1, cols), np.float32)
    acc = np.zeros((rows, cols), np.float32)
    clock = 0
    updates = 0
    macs = 0
    fold = 0
    for ni in range(col_tiles):
        n0 = ni * cols
        nf = min(cols, n_total - n0)
        for mi in range(row_tiles):
            m0 = mi * rows
            mf = min(rows, m_total - m0)
            compute = k_len + mf + nf - 2
            for t in range(compute):
                # Edges: row i gets stationary[t - i, i], column j gets moving[t - j, j].
                for i in range(max(0, t - k_len + 1), min(mf - 1, t) + 1):
                    s_old[i, 0] = stationary[t - i, m0 + i]
                for j in range(max(0, t - k_len + 1), min(nf - 1, t) + 1):
                    v_old[0, j] = moving[t - j, n0 + j]
                # PE(i, j) is busy with element t - i - j when that lies in [0, k_len).
                for i in range(max(0, t - (k_len - 1) - (nf - 1)), min(mf - 1, t) + 1):
                    j_lo = max(0, t - i - (k_len - 1))
                    j_end = min(nf - 1, t - i) + 1
                    busy = j_end - j_lo
                    _os_row(s_old[i][j_lo:j_end], s_new[i][j_lo + 1:j_end + 1],
                            v_old[i][j_lo:j_end], v_new[i + 1][j_lo:j_end], acc[i][j_lo:j_end])
                    updates += busy
                    macs += busy
                s_old, s_new = s_new, s_old
                v_old, v_new = v_new, v_old
            # Drain: accumulators shift down a row per cycle; rows [d, d+mf-1] hold outputs.
            for d in range(rows):
                band_hi = min(d + mf - 1, rows - 1)
                if band_hi == rows - 1:
                    i = rows - 1 - d
                    bottom = acc[rows - 1]
                    for j in range(nf):
                        out[m0 + i, n0 + j] = out[m0 + i, n0 + j] + bottom[j]
                        exit_cycle[m0 + i, n0 + j] = clock + compute + d
                for r in range(min(band_hi, rows - 2), d - 1, -1):
                    a_dst = acc[r + 1]
                    a_src = acc[r]
                    for j in range(nf):
                        a_dst[j] = a_src[j]
                # The emptied top of the band takes the zero entering from above.
                a_top = acc[d]
                for j in range(nf):
                    a_top[j] = 0.0
                updates += (band_hi - d + 1) * nf
            clock += compute + rows
            fold_cycles[fold] = compute + rows
            fold += 1
    return 0, fold_cycles, updates, macs


_KernelRun = tuple[np.ndarray, np.ndarray, tuple]  # output, exit cycles, kernel counts


def _simulate_ws(array: SystolicArray, stationary: np.ndarray, moving: np.ndarray) -> _KernelRun:
    out = np.zeros((stationary.shape[1], moving.shape[1]), np.float32)
    exit_cycle = np.full(out.shape, -1, np.int64)
    counts = _held_stream_kernel(stationary, moving, array.rows, array.cols, out, exit_cycle)
    return out, exit_cycle, counts


def _simulate_is(array: SystolicArray, stationary: np.ndarray, moving: np.ndarray) -> _KernelRun:
    # The same array with roles swapped: the moving tile is held, stationary columns stream.
    n = moving.shape[1]
    out_t = np.zeros((n, stationary.shape[1]), np.float32)
    exit_t = np.full(out_t.shape, -1, np.int64)
    counts = _held_stream_kernel(moving, stationary, array.rows, array.cols, out_t, exit_t)
    return np.ascontiguousarray(out_t.T), np.ascontiguousarray(exit_t.T), counts


def _simulate_os(array: SystolicArray, stationary: np.ndarray, moving: np.ndarray) -> _KernelRun:
    out = np.zeros((stationary.shape[1], moving.shape[1]), np.float32)
    exit_cycle = np.full(out.shape, -1, np.int64)
    counts = _os_kernel(stationary, moving, array.rows, array.cols, out, exit_cycle)
    return out, exit_cycle, counts


# ---- slow reference: every PE of the physical array, with index tags ------------------------


def _empty_frame_planes(rows: int, cols: int) -> dict[str, np.ndarray]:
    return {
        "left_in": np.zeros(rows, np.float32), "left_in_valid": np.zeros(rows, bool),
        "top_in": np.zeros(cols, np.float32), "top_in_valid": np.zeros(cols, bool),
        "right_out": np.zeros(rows, np.float32), "right_out_valid": np.zeros(rows, bool),
        "bottom_out": np.zeros(cols, np.float32), "bottom_out_valid": np.zeros(cols, bool),
        "mac": np.zeros((rows, cols), bool),
        "mac_index": np.full((rows, cols, 3), -1, np.int64),
        "out_index": np.full((cols, 2), -1, np.int64),
    }


def _frame(clock: int, fold: int, phase: str, planes: dict[str, np.ndarray],
           stationary_reg: np.ndarray, moving_reg: np.ndarray, psum_reg: np.ndarray) -> Frame:
    return Frame(cycle=clock, fold=fold, phase=phase, stationary=stationary_reg.copy(),
                 moving=moving_reg.copy(), psum=psum_reg.copy(), **planes)


def _mkn(held_is_stationary: bool, k: int, col: int, tag: int) -> tuple[int, int, int]:
    """(k, m, n) of held-stream work in GEMM column `col` of the held tile on vector `tag`."""
    return (k, col, int(tag)) if held_is_stationary else (k, int(tag), col)


def _check_aligned(clock: int, row: int, col: int, from_left: int, from_top: int) -> None:
    """What meets in a PE from the left and from above must carry the same tag (-1 = empty)."""
    if from_left != from_top:
        raise RuntimeError(
            f"cycle {clock}: PE({row},{col}) got tag {from_left} from the left and tag "
            f"{from_top} from above: the skew is broken")


def _held_stream_frames(array: SystolicArray, stationary: np.ndarray, moving: np.ndarray,
                        held_is_stationary: bool) -> Iterator[Frame]:
    """ws (held = stationary, streams n) and is (held = moving, streams m), one PE at a time.

    Each register carries a tag, the index of the streamed vector its value belongs to, so a
    MAC can name its (k, m, n) and a misaligned skew raises instead of computing garbage.
    """
    rows, cols = array.rows, array.cols
    held, streamed = (stationary, moving) if held_is_stationary else (moving, stationary)
    t_len = streamed.shape[1]
    # Weights persist across folds; rows a fold does not use keep stale values but are disabled.
    weight = np.zeros((rows, cols), np.float32)
    clock = 0
    for fold_index, fold in enumerate(_folds(array, *stationary.shape, moving.shape[1])):
        k0, kf = fold.k0, fold.k
        c0, cf = (fold.m0, fold.m) if held_is_stationary else (fold.n0, fold.n)

        # A fold starts with empty operand pipelines.
        stream_reg = np.zeros((rows, cols), np.float32)
        stream_tag = np.full((rows, cols), -1, np.int64)
        psum_reg = np.zeros((rows, cols), np.float32)
        psum_tag = np.full((rows, cols), -1, np.int64)

        # Load: tile row kf-1-j enters the top in load cycle j; rows 0..kf-1 shift down.
        for j in range(kf):
            planes = _empty_frame_planes(rows, cols)
            planes["top_in"][:cf] = held[k0 + kf - 1 - j, c0:c0 + cf]
            planes["top_in_valid"][:cf] = True
            latched = weight.copy()
            for r in range(kf):
                for c in range(cols):
                    latched[r, c] = planes["top_in"][c] if r == 0 else weight[r - 1, c]
            weight = latched
            regs = (weight, stream_reg) if held_is_stationary else (stream_reg, weight)
            yield _frame(clock, fold_index, "load", planes, *regs, psum_reg)
            clock += 1

        for t in range(t_len + cf + rows - 2):
            planes = _empty_frame_planes(rows, cols)
            for r in range(kf):
                if 0 <= t - r < t_len:
                    planes["left_in"][r] = streamed[k0 + r, t - r]
                    planes["left_in_valid"][r] = True
            new_stream = np.zeros_like(stream_reg)
            new_stream_tag = np.full_like(stream_tag, -1)
            new_psum = np.zeros_like(psum_reg)
            new_psum_tag = np.full_like(psum_tag, -1)
            for r in range(rows):
                for c in range(cols):
                    # Every PE reads what its left and upper neighbours latched last cycle.
                    if c == 0:
                        x_in = planes["left_in"][r]
                        x_tag = t - r if planes["left_in_valid"][r] else -1
                    else:
                        x_in, x_tag = stream_reg[r, c - 1], stream_tag[r, c - 1]
                    if r == 0:
                        # A zero partial sum enters the top together with each vector.
                        p_in, p_tag = np.float32(0.0), (x_tag if c < cf else -1)
                        planes["top_in_valid"][c] = p_tag >= 0
                    else:
                        p_in, p_tag = psum_reg[r - 1, c], psum_tag[r - 1, c]
                    new_stream[r, c], new_stream_tag[r, c] = x_in, x_tag
                    if c >= cf:
                        continue  # disabled column: operands pass on, no partial sums
                    if r >= kf:
                        new_psum[r, c], new_psum_tag[r, c] = p_in, p_tag  # disabled row
                        continue
                    _check_aligned(clock, r, c, x_tag, p_tag)
                    if x_tag < 0:
                        continue
                    new_psum[r, c] = p_in + weight[r, c] * x_in  # fp32 multiply, fp32 add
                    new_psum_tag[r, c] = x_tag
                    planes["mac"][r, c] = True
                    planes["mac_index"][r, c] = _mkn(held_is_stationary, k0 + r, c0 + c, x_tag)
            stream_reg, stream_tag = new_stream, new_stream_tag
            psum_reg, psum_tag = new_psum, new_psum_tag
            planes["right_out"][:] = stream_reg[:, cols - 1]
            planes["right_out_valid"][:] = stream_tag[:, cols - 1] >= 0
            planes["bottom_out"][:] = psum_reg[rows - 1]
            planes["bottom_out_valid"][:] = psum_tag[rows - 1] >= 0
            for c in range(cf):
                tag = psum_tag[rows - 1, c]
                if tag >= 0:
                    planes["out_index"][c] = _mkn(held_is_stationary, 0, c0 + c, tag)[1:]
            regs = (weight, stream_reg) if held_is_stationary else (stream_reg, weight)
            yield _frame(clock, fold_index, "compute", planes, *regs, psum_reg)
            clock += 1


def _ws_frames(array: SystolicArray, stationary: np.ndarray,
               moving: np.ndarray) -> Iterator[Frame]:
    return _held_stream_frames(array, stationary, moving, held_is_stationary=True)


def _is_frames(array: SystolicArray, stationary: np.ndarray,
               moving: np.ndarray) -> Iterator[Frame]:
    return _held_stream_frames(array, stationary, moving, held_is_stationary=False)


def _os_frames(array: SystolicArray, stationary: np.ndarray,
               moving: np.ndarray) -> Iterator[Frame]:
    """os, one PE at a time; operands carry their k, accumulators the output row they hold."""
    rows, cols = array.rows, array.cols
    k_len = stationary.shape[0]
    clock = 0
    for fold_index, fold in enumerate(_folds(array, *stationary.shape, moving.shape[1])):
        m0, mf, n0, nf = fold.m0, fold.m, fold.n0, fold.n
        s_reg = np.zeros((rows, cols), np.float32)
        s_tag = np.full((rows, cols), -1, np.int64)
        v_reg = np.zeros((rows, cols), np.float32)
        v_tag = np.full((rows, cols), -1, np.int64)
        acc = np.zeros((rows, cols), np.float32)
        owner = np.full((rows, cols), -1, np.int64)  # output row i held by each accumulator
        owner[:mf, :nf] = np.arange(mf)[:, None]
        compute = k_len + mf + nf - 2
        for t in range(compute + rows):
            phase = "compute" if t < compute else "drain"
            planes = _empty_frame_planes(rows, cols)
            for i in range(mf):
                if 0 <= t - i < k_len:
                    planes["left_in"][i] = stationary[t - i, m0 + i]
                    planes["left_in_valid"][i] = True
            for j in range(nf):
                if 0 <= t - j < k_len:
                    planes["top_in"][j] = moving[t - j, n0 + j]
                    planes["top_in_valid"][j] = True
            new_s, new_s_tag = np.zeros_like(s_reg), np.full_like(s_tag, -1)
            new_v, new_v_tag = np.zeros_like(v_reg), np.full_like(v_tag, -1)
            new_acc, new_owner = acc.copy(), owner.copy()
            if phase == "drain":
                # Accumulators shift down one row; the bottom row hands its values to PSUM.
                planes["bottom_out"][:] = acc[rows - 1]
                planes["bottom_out_valid"][:] = owner[rows - 1] >= 0
                for j in range(cols):
                    if owner[rows - 1, j] >= 0:
                        planes["out_index"][j] = (m0 + owner[rows - 1, j], n0 + j)
                new_acc[1:], new_owner[1:] = acc[:-1], owner[:-1]
                new_acc[0], new_owner[0] = 0.0, -1
            for i in range(rows):
                for j in range(cols):
                    if j == 0:
                        s_in = planes["left_in"][i]
                        s_k = t - i if planes["left_in_valid"][i] else -1
                    else:
                        s_in, s_k = s_reg[i, j - 1], s_tag[i, j - 1]
                    if i == 0:
                        v_in = planes["top_in"][j]
                        v_k = t - j if planes["top_in_valid"][j] else -1
                    else:
                        v_in, v_k = v_reg[i - 1, j], v_tag[i - 1, j]
                    new_s[i, j], new_s_tag[i, j] = s_in, s_k
                    new_v[i, j], new_v_tag[i, j] = v_in, v_k
                    if i >= mf or j >= nf:
                        continue  # outside the fold: operands only pass through
                    _check_aligned(clock, i, j, s_k, v_k)
                    if s_k < 0:
                        continue
                    new_acc[i, j] = acc[i, j] + s_in * v_in  # fp32 multiply, fp32 add
                    planes["mac"][i, j] = True
                    planes["mac_index"][i, j] = (s_k, m0 + i, n0 + j)
            s_reg, s_tag, v_reg, v_tag = new_s, new_s_tag, new_v, new_v_tag
            acc, owner = new_acc, new_owner
            planes["right_out"][:] = s_reg[:, cols - 1]
            planes["right_out_valid"][:] = s_tag[:, cols - 1] >= 0
            if phase == "compute":
                # Moving operands that reach the bottom edge drop out of the array.
                planes["bottom_out"][:] = v_reg[rows - 1]
                planes["bottom_out_valid"][:] = v_tag[rows - 1] >= 0
            yield _frame(clock, fold_index, phase, planes, s_reg, v_reg, acc)
            clock += 1


# ---- the dataflow table ---------------------------------------------------------------------

_Kernel = Callable[[SystolicArray, np.ndarray, np.ndarray], _KernelRun]


@dataclass(frozen=True)
class _Dataflow:
    """One dataflow: which GEMM dims fold over rows and columns, its timing, its two models."""

    summary: str
    row_dim: str  # GEMM dim held along array rows (folded by `rows`)
    col_dim: str  # GEMM dim held along array columns (folded by `cols`)
    phases: Callable[[int, int, int, int], dict[str, int]]  # (rows, k, m, n) of one fold
    simulate: _Kernel  # numba path
    frames: Callable[[SystolicArray, np.ndarray, np.ndarray], Iterator[Frame]]  # reference


DATAFLOWS: dict[str, _Dataflow] = {
    "ws": _Dataflow("weight-stationary: stationary tile held, moving columns stream right",
                    "k", "m", _ws_phases, _simulate_ws, _ws_frames),
    "os": _Dataflow("output-stationary: outputs held, both operands stream (right and down)",
                    "m", "n", _os_phases, _simulate_os, _os_frames),
    "is": _Dataflow("input-stationary: moving tile held, stationary columns stream right",
                    "k", "n", _is_phases, _simulate_is, _is_frames),
}


# ---- public entry points --------------------------------------------------------------------


def _check_operands(array: SystolicArray, stationary: np.ndarray,
                    moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(array, SystolicArray):
        raise TypeError(f"array must be a SystolicArray, got {type(array).__name__}")
    for name, operand in (("stationary", stationary), ("moving", moving)):
        if not isinstance(operand, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(operand).__name__}")
        if operand.dtype != np.float32:
            # The caller rounds to the engine's input dtype; silently casting would hide that.
            raise TypeError(f"{name} must be float32 (already rounded), got {operand.dtype}")
        if operand.ndim != 2:
            raise ValueError(f"{name} must be 2-D [K, free], got shape {operand.shape}")
        if 0 in operand.shape:
            raise ValueError(f"{name} has an empty dimension: shape {operand.shape}, need >= 1")
    if stationary.shape[0] != moving.shape[0]:
        raise ValueError(
            f"contraction dims disagree: stationary K={stationary.shape[0]}, "
            f"moving K={moving.shape[0]}")
    return np.ascontiguousarray(stationary), np.ascontiguousarray(moving)


def simulate(array: SystolicArray, stationary: np.ndarray, moving: np.ndarray) -> SystolicResult:
    """Run stationary[K, M].T @ moving[K, N] through the PE array, register by register (numba).

    Non-finite inputs pass through as IEEE arithmetic makes them.  `pe_updates` counts the PE
    register updates actually performed: PEs on the active wavefront of the used columns during
    compute, rows 0..j during load cycle j, the occupied accumulator rows during an os drain.
    """
    stationary, moving = _check_operands(array, stationary, moving)
    out, exit_cycle, (load, fold_cycles, updates, macs) = DATAFLOWS[array.dataflow].simulate(
        array, stationary, moving)
    folds = tuple(int(c) for c in fold_cycles)
    return SystolicResult(output=out, total_cycles=sum(folds), load_cycles=int(load),
                          fold_cycles=folds, exit_cycle=exit_cycle, pe_updates=int(updates),
                          macs=int(macs))


def _frames(array: SystolicArray, stationary: np.ndarray,
            moving: np.ndarray) -> Iterator[Frame]:
    stationary, moving = _check_operands(array, stationary, moving)
    with np.errstate(all="ignore"):  # non-finite values pass through, as in simulate()
        yield from DATAFLOWS[array.dataflow].frames(array, stationary, moving)


def simulate_reference(array: SystolicArray, stationary: np.ndarray,
                       moving: np.ndarray) -> SystolicResult:
    """The slow plain-Python model `simulate` must agree with, bit for bit and cycle for cycle.

    Steps every PE of the physical array every cycle, so `pe_updates` = rows * cols * cycles.
    """
    stationary, moving = _check_operands(array, stationary, moving)
    out = np.zeros((stationary.shape[1], moving.shape[1]), np.float32)
    exit_cycle = np.full(out.shape, -1, np.int64)
    fold_cycles: list[int] = []
    load = macs = 0
    for frame in _frames(array, stationary, moving):
        if frame.fold == len(fold_cycles):
            fold_cycles.append(0)
        fold_cycles[frame.fold] += 1
        load += frame.phase == "load"
        macs += int(frame.mac.sum())
        for c in np.flatnonzero(frame.out_index[:, 0] >= 0):
            i, j = frame.out_index[c]
            out[i, j] = out[i, j] + frame.bottom_out[c]  # PSUM accumulates fp32
            exit_cycle[i, j] = frame.cycle
    total = sum(fold_cycles)
    return SystolicResult(output=out, total_cycles=total, load_cycles=load,
                          fold_cycles=tuple(fold_cycles), exit_cycle=exit_cycle,
                          pe_updates=array.rows * array.cols * total, macs=macs)


def record(array: SystolicArray, stationary: np.ndarray, moving: np.ndarray) -> list[Frame]:
    """Per-cycle snapshots of every register, for teaching views (slow reference path)."""
    stationary, moving = _check_operands(array, stationary, moving)
    (k, m), n = stationary.shape, moving.shape[1]
    cycles = sum(isolated_matmul_cycles(array, f.k, f.m, f.n)["total"]
                 for f in _folds(array, k, m, n))
    pe_cycles = array.rows * array.cols * cycles
    if pe_cycles > RECORD_LIMIT:
        raise ValueError(
            f"record() of a {array.rows}x{array.cols} array for {cycles} cycles is {pe_cycles} "
            f"PE-cycles, above the limit of {RECORD_LIMIT}; use simulate()")
    return list(_frames(array, stationary, moving))
