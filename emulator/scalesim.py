"""A SCALE-Sim-compatible systolic model: SCALE-Sim 3.0.0's folds, cycles and access counts.

Follows SCALE-Sim 3.0.0 (Samajdar et al., arXiv:1811.02883; pip package `scalesim==3.0.0`) in its
default CALC ("estimate bandwidth") mode, re-derived in closed form and compiled stream walks
instead of its per-cycle demand matrices; unlike SCALE-Sim it also computes the GEMM's result.

The GEMM.  A layer is an im2col GEMM ofmap[M, N] = ifmap_matrix[M, K] @ filter_matrix[K, N]:
M = output pixels (E_h * E_w with SCALE-Sim's unpadded E = ceil((H - R + stride) / stride)),
N = filters, K = R * S * C.  A GEMM topology line "name, M, N, K" is the conv layer
(H=M, W=K, R=1, S=K, C=1, N filters, stride 1), exactly as SCALE-Sim maps it.  The ifmap is
[H, W, C] (C innermost), the filters [N, R, S, C]; window index w = (r * S + s) * C + c.  Taps
that fall outside the ifmap (the ceil's extra output row/column) have address -1 in SCALE-Sim:
they are never read, and contribute zero here.

Folds.  The dataflow fixes which GEMM dims lie along the array (Sr over rows, Sc over columns)
and which streams in time (T): ws (Sr=K, Sc=N, T=M), os (Sr=M, Sc=N, T=K), is (Sr=K, Sc=M, T=N).
The GEMM is cut into ceil(Sr/R) x ceil(Sc/C) folds, column folds outer, row folds inner; every
fold has its own fill and drain, no overlap.  Whatever its occupancy, a fold costs
    ws, is:  2R + C + T - 2 cycles  (R to load the stationary tile, R + C - 2 of skew, T streamed)
    os:       R + C + T - 2 cycles
and SCALE-Sim's "Total Cycles" is the index of the last cycle: folds * fold_cycles - 1 (plus
stall cycles, which the ofmap write buffer can add; modelled below, zero on all layers we ran).
ws/is write a partial sum for every output in every row fold (K fold); os writes each output once.

SRAM accesses (COMPUTE/DETAILED_ACCESS_REPORT), counted as SCALE-Sim counts them, -1 slots too:
    ws: ifmap col_folds*M*K, filter K*N,           ofmap row_folds*M*N
    os: ifmap col_folds*M*K, filter row_folds*K*N, ofmap M*N + folds*(R + C)  [3.0.0 adds R + C
        per fold to the ofmap count, a quirk we reproduce]
    is: ifmap M*K,           filter col_folds*K*N, ofmap row_folds*M*N
DRAM accesses follow SCALE-Sim's CALC-mode buffers, which depend on the order of the demand
stream, so they are computed by numba walks over that stream (no demand matrix is built):
  reads: a read buffer of ifmap_sram_kb*1024 one-byte words keeps 100 sets of floor(words/100)
    addresses; a miss joins the current set; every 50 completed sets the buffer forgets all it
    held.  So DRAM reads = sum over epochs of 50*floor(words/100) distinct addresses of the
    distinct addresses requested in the epoch.
  writes: the ofmap buffer collects writes in lines of C words and, once half of it is full,
    drains ceil(half / C) lines to DRAM, one line per cycle; SCALE-Sim counts a drained chunk as
    lines * C words minus the empty slots of its last line only, so a partly filled line that is
    not last in its chunk counts C words (hence DRAM ofmap writes = the real writes + C - 1 on
    most large layers).  A write finding the buffer full while a drain runs stalls the array
    (never seen in CALC mode: a drain frees half the buffer faster than C writes a cycle fill it).
"Total Cycles (incl. prefetch)" = last ofmap drain cycle - first ifmap/filter prefetch cycle.

Relation to our PE-level array (`emulator.systolic.simulate`, same fold order).  Map ws and is as
simulate(stationary=filter_matrix[K, N], moving=ifmap_matrix.T[K, M]) and os as
simulate(stationary=ifmap_matrix.T, moving=filter_matrix); the PE output is the ofmap (ws/is
transposed).  Fold by fold, with k, c_used the rows and columns the fold occupies:
    ws, is: scalesim_fold = pe_fold + (R - k) + (C - c_used)
            SCALE-Sim loads all R rows and drains all C columns even when the fold uses fewer;
    os:     scalesim_fold = pe_fold + C - m_used - n_used
            SCALE-Sim skews over the full R + C - 2 but does not charge the R-cycle shift-out of
            the accumulators our PE model performs (-R on a full fold),
and Total Cycles = sum of those - 1 (`cycles_from_pe`).  Results: our model sums each K fold with
BLAS in fp32 and adds fold partial sums in fp32; the PE model sums in strict k order, so the two
agree to fp32 rounding, and exactly when every partial sum is exactly representable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numba
import numpy as np

from emulator.systolic import SystolicArray, SystolicResult

# ---- SCALE-Sim 3.0.0's fixed memory constants (CALC mode), each with where it is set ----------
WORD_BYTES = 1  # single_layer_sim.run: word_size = 1
ACTIVE_FRACTION_PCT = 50  # single_layer_sim.run: active_buf_frac = 0.5 (read and write buffers)
READ_SETS = 100  # read_buffer_estimate_bw.set_params: num_items_per_set = floor(words / 100)
READ_BACKING_WORDS_PER_CYCLE = 10  # single_layer_sim.run: ifmap/filter_backing_bw = 10
# write_port.py: latency = 0; single_layer_sim.run: ofmap_backing_bw = array columns.

MODES: dict[str, str] = {"scalesim-ws": "ws", "scalesim-os": "os", "scalesim-is": "is"}
TOPOLOGY_KINDS = ("gemm", "conv")


def _positive_int(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{owner}: {name}={value} must be >= 1")


# ---- layers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvLayer:
    """One convolution as SCALE-Sim reads it: no padding, one stride for both axes."""

    name: str
    ifmap_h: int
    ifmap_w: int
    filter_h: int
    filter_w: int
    channels: int
    filters: int
    stride: int = 1

    def __post_init__(self) -> None:
        for f in ("ifmap_h", "ifmap_w", "filter_h", "filter_w", "channels", "filters",
                  "stride"):
            _positive_int(f"layer {self.name!r}", f, getattr(self, f))
        if self.filter_h > self.ifmap_h or self.filter_w > self.ifmap_w:
            raise ValueError(
                f"layer {self.name!r}: filter {self.filter_h}x{self.filter_w} exceeds ifmap "
                f"{self.ifmap_h}x{self.ifmap_w} (SCALE-Sim pads nothing)")

    @property
    def ofmap_h(self) -> int:
        return -(-(self.ifmap_h - self.filter_h + self.stride) // self.stride)

    @property
    def ofmap_w(self) -> int:
        return -(-(self.ifmap_w - self.filter_w + self.stride) // self.stride)

    @property
    def mnk(self) -> tuple[int, int, int]:
        """(M output pixels, N filters, K window) of the im2col GEMM."""
        return (self.ofmap_h * self.ofmap_w, self.filters,
                self.filter_h * self.filter_w * self.channels)

    def as_conv(self) -> ConvLayer:
        return self


@dataclass(frozen=True)
class GemmLayer:
    """One GEMM line of a SCALE-Sim topology: ofmap[M, N] = ifmap[M, K] @ filter[K, N]."""

    name: str
    m: int
    n: int
    k: int

    def __post_init__(self) -> None:
        for f in ("m", "n", "k"):
            _positive_int(f"layer {self.name!r}", f, getattr(self, f))

    @property
    def mnk(self) -> tuple[int, int, int]:
        return self.m, self.n, self.k

    def as_conv(self) -> ConvLayer:
        """SCALE-Sim's own mapping (topology_utils.load_arrays_gemm)."""
        return ConvLayer(self.name, self.m, self.k, 1, self.k, 1, self.n, 1)


Layer = ConvLayer | GemmLayer


# ---- topology CSVs ----------------------------------------------------------------------------

# Column names of each topology kind, after the layer name, and the record each line becomes.
_TOPOLOGY_COLUMNS: dict[str, tuple[str, ...]] = {
    "gemm": ("M", "N", "K"),
    "conv": ("IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels",
             "Num Filter", "Strides"),
}


def _fields(line: str) -> list[str]:
    """Comma-separated fields, stripped, without the trailing empty ones SCALE-Sim writes."""
    fields = [f.strip() for f in line.split(",")]
    while fields and fields[-1] == "":
        fields.pop()
    return fields


def _detect_kind(header: list[str], source: str) -> str:
    for kind, columns in _TOPOLOGY_COLUMNS.items():
        if [h.lower() for h in header[1:]] == [c.lower() for c in columns]:
            return kind
    raise ValueError(
        f"{source}:1: cannot tell the topology kind from header {', '.join(header)!r}; expected "
        + " or ".join(f"'Layer, {', '.join(c)}'" for c in _TOPOLOGY_COLUMNS.values())
        + " (or pass kind='gemm'/'conv')")


def parse_topology(text: str, kind: str | None = None, source: str = "<text>") -> tuple[Layer, ...]:
    """Layers of a SCALE-Sim topology CSV (first line is the header; blank lines skipped).

    `kind` is "gemm" (Layer, M, N, K) or "conv" (Layer name, IFMAP Height, IFMAP Width, Filter
    Height, Filter Width, Channels, Num Filter, Strides); None reads it from the header.  Lines
    may end with any number of commas.  As in SCALE-Sim, a conv layer whose name contains "DP"
    is depthwise: it becomes one single-channel layer per channel, named NAME + "Channel_i".
    Sparsity ratios (a further column) are not modelled and are rejected.
    """
    lines = text.splitlines()
    if not lines or not _fields(lines[0]):
        raise ValueError(f"{source}:1: empty topology: the first line must be the header")
    header = _fields(lines[0])
    if kind is None:
        kind = _detect_kind(header, source)
    if kind not in _TOPOLOGY_COLUMNS:
        raise ValueError(f"unknown topology kind {kind!r}; known: {', '.join(TOPOLOGY_KINDS)}")
    columns = _TOPOLOGY_COLUMNS[kind]
    layers: list[Layer] = []
    for number, line in enumerate(lines[1:], start=2):
        fields = _fields(line)
        if not fields:
            continue
        where = f"{source}:{number}"
        if len(fields) != 1 + len(columns):
            raise ValueError(
                f"{where}: expected {1 + len(columns)} fields (name, {', '.join(columns)}), got "
                f"{len(fields)}: {line.strip()!r}")
        name = fields[0]
        if not name:
            raise ValueError(f"{where}: column 1 (layer name) is empty")
        values = []
        for col, (column, raw) in enumerate(zip(columns, fields[1:]), start=2):
            if not raw.isdigit() or int(raw) < 1:
                raise ValueError(
                    f"{where}: column {col} ({column}) must be a positive integer, got {raw!r}")
            values.append(int(raw))
        try:
            if kind == "gemm":
                layers.append(GemmLayer(name, *values))
            elif "DP" in name:
                conv = ConvLayer(name, *values)
                layers.extend(ConvLayer(f"{name}Channel_{i}", *values[:4], 1, *values[5:])
                              for i in range(conv.channels))
            else:
                layers.append(ConvLayer(name, *values))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    return tuple(layers)


def read_topology(path: str | Path, kind: str | None = None) -> tuple[Layer, ...]:
    """Layers of the SCALE-Sim topology CSV at `path` (see `parse_topology`)."""
    path = Path(path)
    return parse_topology(path.read_text(), kind, source=str(path))


# ---- the machine --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleSimConfig:
    """The SCALE-Sim config fields that change results in CALC mode."""

    rows: int = 128
    cols: int = 128
    mode: str = "scalesim-ws"
    ifmap_sram_kb: int = 64  # SCALE-Sim's configs/scale.cfg uses 64 kB for each buffer
    filter_sram_kb: int = 64
    ofmap_sram_kb: int = 64

    def __post_init__(self) -> None:
        for f in ("rows", "cols", "ifmap_sram_kb", "filter_sram_kb", "ofmap_sram_kb"):
            _positive_int("ScaleSimConfig", f, getattr(self, f))
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; known: {', '.join(MODES)}")
        for f in ("ifmap_sram_kb", "filter_sram_kb"):
            if getattr(self, f) * 1024 // WORD_BYTES < READ_SETS:
                raise ValueError(
                    f"ScaleSimConfig: {f}={getattr(self, f)} holds fewer than {READ_SETS} words, "
                    f"so SCALE-Sim's read buffer has empty sets")

    @property
    def dataflow(self) -> str:
        return MODES[self.mode]


# ---- folds --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoldPlan:
    """SCALE-Sim's spatio-temporal mapping of one layer's GEMM onto the array, and its folds."""

    m: int
    n: int
    k: int
    sr: int  # GEMM extent along the array's rows
    sc: int  # along its columns
    t: int  # streamed in time
    row_folds: int
    col_folds: int
    fold_cycles: int  # every fold, whatever its occupancy
    row_start: np.ndarray = field(repr=False)  # [folds] first Sr index of each fold
    rows_used: np.ndarray = field(repr=False)  # [folds]
    col_start: np.ndarray = field(repr=False)  # [folds] first Sc index
    cols_used: np.ndarray = field(repr=False)  # [folds]

    @property
    def folds(self) -> int:
        return self.row_folds * self.col_folds


@dataclass(frozen=True)
class _Flow:
    """One SCALE-Sim dataflow: the GEMM dims along rows, columns and time, and whether a fold
    holds an operand tile (loaded in R cycles, K folded over the rows, a partial sum written
    per K fold) or the outputs (os: K streams, each output written once)."""

    sr: str
    sc: str
    t: str
    holds_operand: bool


# topology_utils.calc_spatio_temporal_params and systolic_compute_{ws,os,is}.py
_FLOWS: dict[str, _Flow] = {
    "ws": _Flow("k", "n", "m", True), "os": _Flow("m", "n", "k", False),
    "is": _Flow("k", "m", "n", True)}


def fold_plan(layer: Layer, config: ScaleSimConfig) -> FoldPlan:
    """The folds of `layer` on `config`'s array, in SCALE-Sim's order (column folds outer)."""
    m, n, k = layer.mnk
    extent = {"m": m, "n": n, "k": k}
    flow = _FLOWS[config.dataflow]
    sr, sc, t = extent[flow.sr], extent[flow.sc], extent[flow.t]
    rows, cols = config.rows, config.cols
    row_folds, col_folds = -(-sr // rows), -(-sc // cols)
    row_start = np.tile(np.arange(row_folds, dtype=np.int64) * rows, col_folds)
    col_start = np.repeat(np.arange(col_folds, dtype=np.int64) * cols, row_folds)
    return FoldPlan(
        m=m, n=n, k=k, sr=sr, sc=sc, t=t, row_folds=row_folds, col_folds=col_folds,
        fold_cycles=flow.holds_operand * rows + rows + cols + t - 2,
        row_start=row_start, rows_used=np.minimum(rows, sr - row_start),
        col_start=col_start, cols_used=np.minimum(cols, sc - col_start))


# ---- semantics: operand matrices and the result -------------------------------------------------


def ifmap_addresses(layer: Layer) -> np.ndarray:
    """SCALE-Sim's IFMAP operand matrix [M, K]: word address of each (pixel, window) tap in the
    [H, W, C] ifmap (offset 0), -1 where the tap falls outside it (operand_matrix.py)."""
    conv = layer.as_conv()
    m, _, k = conv.mnk
    pixel = np.arange(m, dtype=np.int64)[:, None]
    window = np.arange(k, dtype=np.int64)[None, :]
    row = pixel // conv.ofmap_w * conv.stride + window // (conv.filter_w * conv.channels)
    col = (pixel % conv.ofmap_w * conv.stride
           + window % (conv.filter_w * conv.channels) // conv.channels)
    inside = (row < conv.ifmap_h) & (col < conv.ifmap_w)
    address = (row * conv.ifmap_w + col) * conv.channels + window % conv.channels
    return np.where(inside, address, -1)


def filter_addresses(layer: Layer) -> np.ndarray:
    """SCALE-Sim's FILTER operand matrix [K, N]: filter n's tap w is word n * K + w."""
    _, n, k = layer.mnk
    return np.arange(k, dtype=np.int64)[:, None] + np.arange(n, dtype=np.int64)[None, :] * k


def _check_tensor(name: str, value: np.ndarray, shape: tuple[int, ...]) -> None:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype != np.float32:
        # As in emulator.systolic: the caller rounds; a silent cast would hide that.
        raise TypeError(f"{name} must be float32, got {value.dtype}")
    if value.shape != shape:
        raise ValueError(f"{name} has shape {value.shape}, expected {shape}")


def operand_matrices(layer: Layer, ifmap: np.ndarray,
                     filters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The GEMM operands ifmap_matrix [M, K] and filter_matrix [K, N] of `layer`.

    GEMM layers take ifmap [M, K] and filters [K, N] as they are; conv layers take ifmap
    [H, W, C] and filters [N, R, S, C] and gather im2col through `ifmap_addresses`.
    """
    m, n, k = layer.mnk
    if isinstance(layer, GemmLayer):
        _check_tensor("ifmap", ifmap, (m, k))
        _check_tensor("filters", filters, (k, n))
        return ifmap, filters
    conv = layer.as_conv()
    _check_tensor("ifmap", ifmap, (conv.ifmap_h, conv.ifmap_w, conv.channels))
    _check_tensor("filters", filters, (n, conv.filter_h, conv.filter_w, conv.channels))
    # Address -1 (a tap outside the ifmap) picks the zero appended after the last word.
    words = np.append(ifmap.reshape(-1), np.float32(0.0))
    return words[ifmap_addresses(conv)], np.ascontiguousarray(filters.reshape(n, k).T)


def compute(layer: Layer, config: ScaleSimConfig, ifmap: np.ndarray,
            filters: np.ndarray) -> np.ndarray:
    """ofmap [M, N] (fp32) as the fold schedule produces it: ws and is fold K over the array's
    rows and write a partial sum per K fold, which is added in fp32 in fold order; os keeps
    each output in its PE for the whole K."""
    a, b = operand_matrices(layer, ifmap, filters)
    k = a.shape[1]
    k_fold = config.rows if _FLOWS[config.dataflow].holds_operand else k
    out = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for k0 in range(0, k, k_fold):
        out += a[:, k0:k0 + k_fold] @ b[k0:k0 + k_fold]
    return out


# ---- the demand streams (numba) -----------------------------------------------------------------
# SCALE-Sim feeds its buffers one demand row per cycle, fold after fold; each fold's demand is the
# operand tile either skewed (lane c delayed c cycles after a prefix) or loaded flipped (the tile's
# last row first, one per cycle).  A stream is described per fold by the first row and column of
# the operand matrix it reads and the number of lanes; element (u, lane) of a fold reads
#     operand[row0 + u*du_row + lane*dl_row, col0 + u*du_col + lane*dl_col]
# where u is the data row (skewed: the demand row minus prefix minus lane; flipped: R-1 minus it).


@numba.njit(inline="always")
def _lane_span(t, prefix, length, lanes, flip, rows):
    """Lanes of a fold's demand row t that carry data: [lo, hi), and the data row of lane 0."""
    if flip:
        u = rows - 1 - t
        if t >= rows or u >= length:
            return 0, 0, 0
        return 0, lanes, u
    lo = max(0, t - prefix - length + 1)
    hi = min(lanes, t - prefix + 1)
    return lo, hi, t - prefix


@numba.njit(cache=True)
def _read_stream(address, row0, col0, lanes, length, prefix, flip, rows, fold_rows,
                 du_row, dl_row, du_col, dl_col, space, epoch_words):
    """Walk one operand's read stream through SCALE-Sim's estimate-bandwidth read buffer.

    Returns (DRAM reads, first demand row that requests anything).
    """
    seen_in = np.full(space, -1, np.int32)  # epoch in which each address was last inserted
    epoch = 0
    in_epoch = 0
    reads = 0
    first_row = -1
    for f in range(row0.shape[0]):
        for t in range(fold_rows):
            lo, hi, u0 = _lane_span(t, prefix, length[f], lanes[f], flip, rows)
            for lane in range(lo, hi):
                u = u0 if flip else u0 - lane
                a = address[row0[f] + u * du_row + lane * dl_row,
                            col0[f] + u * du_col + lane * dl_col]
                if a < 0:
                    continue  # a tap outside the ifmap: SCALE-Sim's -1, nothing is read
                if first_row < 0:
                    first_row = f * fold_rows + t
                if seen_in[a] != epoch:
                    seen_in[a] = epoch
                    reads += 1
                    in_epoch += 1
                    if in_epoch == epoch_words:  # 50 sets complete: the buffer forgets them
                        epoch += 1
                        in_epoch = 0
    return reads, first_row


@numba.njit(inline="always")
def _drain(start_cycle, state, partial_line, partial_valid, line_words, lines_per_drain):
    """Drain one chunk of lines from `start_cycle`; returns the cycle of its last line.

    state = [lines, drain_start, partial_ptr, free, dram_writes, dram_stop].  A chunk is never
    empty: a drain starts only when more than half of the buffer awaits draining.
    """
    lines, first = state[0], state[1]
    last = min(first + lines_per_drain, lines)
    count = last - first
    words = count * line_words
    # Only the last line of a chunk has its empty slots subtracted (write_buffer.empty_drain_buf).
    while state[2] < partial_line.shape[0] and partial_line[state[2]] < last - 1:
        state[2] += 1
    if state[2] < partial_line.shape[0] and partial_line[state[2]] == last - 1:
        words -= line_words - partial_valid[state[2]]
        state[2] += 1
    state[4] += words
    state[3] += words
    state[1] = last
    end = start_cycle + count - 1
    state[5] = max(state[5], end)
    return end


@numba.njit(inline="always")
def _append_partial(partial_line, partial_valid, partials, state, fill):
    """Close the line being collected with `fill` words (append_to_trace_mat(force=True))."""
    if partials == partial_line.shape[0]:
        partial_line = np.concatenate((partial_line, partial_line))
        partial_valid = np.concatenate((partial_valid, partial_valid))
    partial_line[partials] = state[0]
    partial_valid[partials] = fill
    state[0] += 1
    return partial_line, partial_valid


@numba.njit(cache=True)
def _write_stream(lanes, length, prefix, fold_rows, line_words, total_words, active_words,
                  lines_per_drain):
    """Walk the ofmap write stream through SCALE-Sim's write buffer (write_buffer.py).

    Returns (DRAM writes, stall cycles, cycle of the last demand row, last DRAM write cycle).
    Partially filled lines are force-appended before every drain.
    """
    partial_line = np.empty(16, np.int64)  # index and words of each partly filled line
    partial_valid = np.empty(16, np.int64)
    partials = 0
    state = np.zeros(6, np.int64)
    state[3] = total_words
    state[5] = -1
    fill = 0  # words in the line being collected
    drain_end = 0
    stall = 0
    row = 0
    out_cycle = 0
    for f in range(lanes.shape[0]):
        for t in range(fold_rows):
            lo, hi, _ = _lane_span(t, prefix[f], length[f], lanes[f], False, 0)
            cycle = row + stall
            current = cycle
            for _ in range(lo, hi):
                fill += 1
                state[3] -= 1
                if fill == line_words:
                    state[0] += 1
                    fill = 0
                if current < drain_end:
                    if state[3] <= 0:  # buffer full while draining: the array stalls
                        current = drain_end
                elif state[3] < active_words:
                    if fill != 0:
                        partial_line, partial_valid = _append_partial(
                            partial_line, partial_valid, partials, state, fill)
                        partials += 1
                        fill = 0
                    drain_end = _drain(current, state, partial_line[:partials],
                                       partial_valid[:partials], line_words, lines_per_drain)
            stall += current - cycle
            out_cycle = current
            row += 1
    # empty_all_buffers: the last partial line, then chunk after chunk back to back.
    if fill != 0:
        partial_line, partial_valid = _append_partial(partial_line, partial_valid, partials,
                                                      state, fill)
        partials += 1
    cycle = out_cycle
    while state[1] < state[0]:
        cycle = _drain(cycle, state, partial_line[:partials], partial_valid[:partials],
                       line_words, lines_per_drain) + 1
    return state[4], stall, out_cycle, state[5]


# ---- timing: the report -----------------------------------------------------------------------

# Report field -> SCALE-Sim 3.0.0 report column it reproduces (COMPUTE_REPORT.csv,
# DETAILED_ACCESS_REPORT.csv); the comparison benchmark reads SCALE-Sim's CSVs through this.
REPORT_COLUMNS: dict[str, str] = {
    "total_cycles_incl_prefetch": "Total Cycles (incl. prefetch)",
    "total_cycles": "Total Cycles",
    "stall_cycles": "Stall Cycles",
    "overall_util_pct": "Overall Util %",
    "mapping_efficiency_pct": "Mapping Efficiency %",
    "compute_util_pct": "Compute Util %",
    "ifmap_sram_reads": "SRAM IFMAP Reads",
    "filter_sram_reads": "SRAM Filter Reads",
    "ofmap_sram_writes": "SRAM OFMAP Writes",
    "ifmap_dram_reads": "DRAM IFMAP Reads",
    "filter_dram_reads": "DRAM Filter Reads",
    "ofmap_dram_writes": "DRAM OFMAP Writes",
}


@dataclass(frozen=True)
class ScaleSimReport:
    """SCALE-Sim 3.0.0's per-layer report items for one layer on one config."""

    layer: str
    mode: str
    rows: int
    cols: int
    m: int
    n: int
    k: int
    folds: int
    fold_cycles: int
    total_cycles_incl_prefetch: int
    total_cycles: int
    stall_cycles: int
    overall_util_pct: float
    mapping_efficiency_pct: float
    compute_util_pct: float
    ifmap_sram_reads: int
    filter_sram_reads: int
    ofmap_sram_writes: int
    ifmap_dram_reads: int
    filter_dram_reads: int
    ofmap_dram_writes: int

    def to_json(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"{self.layer} {self.mode} {self.rows}x{self.cols}: {self.total_cycles} cycles "
                f"({self.folds} folds x {self.fold_cycles}), SRAM rd {self.ifmap_sram_reads}/"
                f"{self.filter_sram_reads} wr {self.ofmap_sram_writes}, DRAM rd "
                f"{self.ifmap_dram_reads}/{self.filter_dram_reads} wr {self.ofmap_dram_writes}")


@dataclass(frozen=True)
class _Stream:
    """How one operand's demand rows read its operand matrix, for one dataflow.

    `origin` names where each fold's first operand row/column comes from ("row" = the fold's
    first Sr index, "col" = its first Sc index, "zero"), `lanes`/`length` which fold extent gives
    the lanes and the data rows ("rows_used", "cols_used", or a GEMM dim "m"/"n"/"k"), `prefix`
    the empty demand rows before the data: "0", or "r" (the R cycles of the stationary load).
    """

    operand: str  # "ifmap" or "filter"
    flip: bool
    prefix: str
    lanes: str
    length: str
    origin: tuple[str, str]
    du: tuple[int, int]  # operand (row, col) step per data row
    dl: tuple[int, int]  # operand (row, col) step per lane


# The read streams of systolic_compute_{ws,os,is}.create_{ifmap,filter}_demand_mat.
_READ_STREAMS: dict[str, tuple[_Stream, _Stream]] = {
    "ws": (_Stream("ifmap", False, "r", "rows_used", "m", ("zero", "row"), (1, 0), (0, 1)),
           _Stream("filter", True, "0", "cols_used", "rows_used", ("row", "col"), (1, 0), (0, 1))),
    "os": (_Stream("ifmap", False, "0", "rows_used", "k", ("row", "zero"), (0, 1), (1, 0)),
           _Stream("filter", False, "0", "cols_used", "k", ("zero", "col"), (1, 0), (0, 1))),
    "is": (_Stream("ifmap", True, "0", "cols_used", "rows_used", ("col", "row"), (0, 1), (1, 0)),
           _Stream("filter", False, "r", "rows_used", "n", ("row", "zero"), (0, 1), (1, 0))),
}


def _fold_values(plan: FoldPlan, what: str) -> np.ndarray:
    values = {"row": plan.row_start, "col": plan.col_start, "rows_used": plan.rows_used,
              "cols_used": plan.cols_used}
    if what in values:
        return np.ascontiguousarray(values[what])
    extent = {"zero": 0, "m": plan.m, "n": plan.n, "k": plan.k}[what]
    return np.full(plan.folds, extent, np.int64)


def _dram_reads(stream: _Stream, plan: FoldPlan, config: ScaleSimConfig,
                layer: Layer) -> tuple[int, int]:
    """(DRAM reads, first DRAM response cycle) of one read buffer."""
    sram_kb = config.ifmap_sram_kb if stream.operand == "ifmap" else config.filter_sram_kb
    words_per_set = sram_kb * 1024 // WORD_BYTES // READ_SETS
    active_sets = READ_SETS * ACTIVE_FRACTION_PCT // 100
    address = ifmap_addresses(layer) if stream.operand == "ifmap" else filter_addresses(layer)
    space = int(address.max()) + 1
    if space < 2**31:
        address = address.astype(np.int32)  # half the memory traffic of the walk
    prefix = {"0": 0, "r": config.rows}[stream.prefix]
    reads, first_row = _read_stream(
        address, _fold_values(plan, stream.origin[0]), _fold_values(plan, stream.origin[1]),
        _fold_values(plan, stream.lanes), _fold_values(plan, stream.length), prefix,
        stream.flip, config.rows, plan.fold_cycles, stream.du[0], stream.dl[0], stream.du[1],
        stream.dl[1], space, active_sets * words_per_set)
    # The first prefetch brings the active half (or, if it never filled, every set) at
    # READ_BACKING_WORDS_PER_CYCLE, ending one port latency plus one cycle before the first
    # request (or before cycle 0); its first response comes one port latency after it starts,
    # so the latency cancels (read_buffer_estimate_bw.manage_prefetches,
    # complete_all_prefetches).
    if reads >= active_sets * words_per_set:
        prefetch = math.ceil(active_sets * words_per_set / READ_BACKING_WORDS_PER_CYCLE)
        return int(reads), int(first_row) - prefetch
    sets = -(-int(reads) // words_per_set)
    return int(reads), -math.ceil(sets * words_per_set / READ_BACKING_WORDS_PER_CYCLE)


def _ofmap_stream(plan: FoldPlan, config: ScaleSimConfig) -> tuple[np.ndarray, ...]:
    """(lanes, data rows, prefix) per fold of the ofmap write demand (create_ofmap_demand_mat)."""
    rows = config.rows
    if _FLOWS[config.dataflow].holds_operand:
        # 2R-1 empty rows, then the T streamed outputs of the used columns, skewed.
        prefix = np.full(plan.folds, 2 * rows - 1, np.int64)
        return plan.cols_used, np.full(plan.folds, plan.t, np.int64), prefix
    # os: T-1 empty rows, then the R x C tile flipped (its used rows come last), then skewed.
    return plan.cols_used, plan.rows_used, plan.k - 1 + rows - plan.rows_used


def schedule(layer: Layer, config: ScaleSimConfig) -> ScaleSimReport:
    """SCALE-Sim 3.0.0's report items for `layer` on `config`, without computing any values."""
    plan = fold_plan(layer, config)
    rows, cols, flow = config.rows, config.cols, config.dataflow
    m, n, k = plan.m, plan.n, plan.k
    sram = {
        "ws": (plan.col_folds * m * k, k * n, plan.row_folds * m * n),
        "os": (plan.col_folds * m * k, plan.row_folds * k * n,
               m * n + plan.folds * (rows + cols)),
        "is": (m * k, plan.col_folds * k * n, plan.row_folds * m * n),
    }[flow]
    ifmap_stream, filter_stream = _READ_STREAMS[flow]
    ifmap_dram, ifmap_start = _dram_reads(ifmap_stream, plan, config, layer)
    filter_dram, filter_start = _dram_reads(filter_stream, plan, config, layer)
    total_words = config.ofmap_sram_kb * 1024 // WORD_BYTES
    active_words = math.ceil(total_words * ACTIVE_FRACTION_PCT / 100)
    lanes, length, prefix = _ofmap_stream(plan, config)
    ofmap_dram, stall, last_cycle, dram_stop = _write_stream(
        np.ascontiguousarray(lanes), np.ascontiguousarray(length), np.ascontiguousarray(prefix),
        plan.fold_cycles, cols, total_words, active_words,
        -(-(total_words - active_words) // cols))
    # single_layer_sim.calc_report_data and systolic_compute_*: utilisation of the fold cycles
    # SCALE-Sim counts per fold (its demand matrix height + width - 1, before skew for os).
    util_cycles = plan.fold_cycles + (cols - 1 if _FLOWS[flow].holds_operand else 0)
    total_cycles = int(last_cycle)
    if total_cycles == 0:
        raise ValueError(
            f"layer {layer.name!r} on {config}: a one-cycle schedule has Total Cycles 0, by "
            f"which SCALE-Sim divides for its overall utilisation (it fails here too)")
    return ScaleSimReport(
        layer=layer.name, mode=config.mode, rows=rows, cols=cols, m=m, n=n, k=k,
        folds=plan.folds, fold_cycles=plan.fold_cycles,
        total_cycles_incl_prefetch=int(dram_stop - min(ifmap_start, filter_start)),
        total_cycles=total_cycles, stall_cycles=int(stall),
        overall_util_pct=(m * n * k * 100) / (total_cycles * rows * cols),
        mapping_efficiency_pct=100 * plan.sr * plan.sc / (plan.folds * rows * cols),
        compute_util_pct=100 * plan.sr * plan.sc * plan.t
        / (plan.folds * rows * cols * util_cycles),
        ifmap_sram_reads=sram[0], filter_sram_reads=sram[1], ofmap_sram_writes=sram[2],
        ifmap_dram_reads=ifmap_dram, filter_dram_reads=filter_dram,
        ofmap_dram_writes=int(ofmap_dram))


@dataclass(frozen=True)
class ScaleSimResult:
    """What the compatible model produced for one layer: the ofmap and SCALE-Sim's report."""

    output: np.ndarray  # [M, N] float32
    report: ScaleSimReport


def simulate_layer(layer: Layer, config: ScaleSimConfig, ifmap: np.ndarray,
                   filters: np.ndarray) -> ScaleSimResult:
    """The ofmap (`compute`) and SCALE-Sim's report (`schedule`) of one layer."""
    return ScaleSimResult(compute(layer, config, ifmap, filters), schedule(layer, config))


# ---- the bridge to our PE-level array -----------------------------------------------------------


def pe_operands(config: ScaleSimConfig, ifmap_matrix: np.ndarray,
                filter_matrix: np.ndarray) -> tuple[SystolicArray, np.ndarray, np.ndarray, bool]:
    """(array, stationary, moving, transposed) for `emulator.systolic.simulate` running the
    same folds as SCALE-Sim; the PE output is the ofmap, transposed when `transposed`."""
    array = SystolicArray(config.rows, config.cols, config.dataflow)
    if _FLOWS[config.dataflow].holds_operand:
        return array, filter_matrix, np.ascontiguousarray(ifmap_matrix.T), True
    return array, np.ascontiguousarray(ifmap_matrix.T), filter_matrix, False


def pe_fold_offsets(layer: Layer, config: ScaleSimConfig) -> np.ndarray:
    """Per fold, in the shared fold order: SCALE-Sim's fold cycles minus our PE model's."""
    plan = fold_plan(layer, config)
    if _FLOWS[config.dataflow].holds_operand:
        return (config.rows - plan.rows_used) + (config.cols - plan.cols_used)
    return config.cols - plan.rows_used - plan.cols_used


def cycles_from_pe(result: SystolicResult, layer: Layer, config: ScaleSimConfig) -> int:
    """SCALE-Sim's Total Cycles (stall-free) from a PE-level run of the same folds."""
    offsets = pe_fold_offsets(layer, config)
    if len(result.fold_cycles) != len(offsets):
        raise ValueError(
            f"the PE run has {len(result.fold_cycles)} folds, SCALE-Sim's plan {len(offsets)}; "
            f"build its operands with pe_operands()")
    return int(np.sum(np.asarray(result.fold_cycles) + offsets)) - 1
