"""Hypothesis strategies for ncemu's own types, in one module (PyMTL3's datatypes/strategies.py).

dtypes and their bit patterns, legal on-chip and HBM access patterns, dense tiles with values,
instruction records of every opcode (legal on the engine they are drawn for) and valid Programs.
Legal partition ranges come from an independent statement of the operand rule [A2 2.1], not from
`Target.check_partition_range`, so that tests can hold the two against each other.
"""

from __future__ import annotations

from math import prod

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from isa import (
    DTYPES,
    INF2,
    OPCODES,
    AccessPattern,
    Activation,
    AffineSelect,
    BnAggr,
    BnStats,
    DmaCopy,
    DramTensor,
    DType,
    Engine,
    Iota,
    MatMul,
    Memset,
    Program,
    Reciprocal,
    Signal,
    Space,
    Stream,
    TensorCopy,
    TensorReduce,
    TensorScalar,
    TensorTensor,
    TensorTensorScan,
    Transpose,
    Wait,
    dtype,
    stream_engine,
)
from isa.instructions import (
    ACTIVATIONS,
    AFFINE_CMPS,
    ALU_OPS,
    BITWISE_OPS,
    REDUCE_OPS,
    AllGather,
    AllReduce,
    Recv,
    ReduceScatter,
    Send,
)

TARGET = INF2
FLOAT_DTYPES: tuple[DType, ...] = tuple(d for d in DTYPES.values() if d.is_float)
INT_DTYPES: tuple[DType, ...] = tuple(d for d in DTYPES.values() if not d.is_float)
ARITHMETIC_OPS = tuple(op for op in ALU_OPS if op not in BITWISE_OPS)


# Operand slots for tests that execute: the operands of one instruction go to distinct SBUF slots
# (SLOT bytes of every partition, below STAGING) or distinct PSUM banks, so that loading one never
# overwrites another.  The single-instruction harness (conftest) stages PSUM data above STAGING.
SLOT = 16 * 1024
STAGING = 160 * 1024


def sbuf_slot(index: int) -> tuple[int, int]:
    """Byte range [first, end) of SBUF operand slot `index` in every partition."""
    assert 0 <= index < STAGING // SLOT
    return index * SLOT, (index + 1) * SLOT


def psum_bank(index: int) -> tuple[int, int]:
    """Byte range [first, end) of PSUM bank `index`."""
    assert 0 <= index < TARGET.psum_banks
    return index * TARGET.psum_bank_bytes, (index + 1) * TARGET.psum_bank_bytes


# ---- dtypes and values -------------------------------------------------------------------------
def dtypes(kind: str = "any") -> st.SearchStrategy[DType]:
    """A NeuronCore dtype: `any`, `float` or `int`."""
    pool = {"any": tuple(DTYPES.values()), "float": FLOAT_DTYPES, "int": INT_DTYPES}[kind]
    return st.sampled_from(pool)


@st.composite
def bit_patterns(draw, dt: DType | str, size: int = 8) -> np.ndarray:
    """`size` elements of `dt` from arbitrary bit patterns (NaN, inf, subnormals included).

    tf32 is stored as fp32 with only 10 explicit mantissa bits, so its low 13 bits are cleared.
    """
    dt = dtype(dt)
    bits = 8 * dt.itemsize
    raw = draw(st.lists(st.integers(0, 2**bits - 1), min_size=size, max_size=size))
    words = np.array(raw, dtype=f"u{dt.itemsize}")
    if dt.mantissa_bits:
        words &= np.array(~((1 << (23 - dt.mantissa_bits)) - 1) & 0xFFFFFFFF, np.uint32)
    return words.view(dt.storage)


def random_values(dt: DType | str, shape: tuple[int, ...], seed: int, scale: float = 4.0,
                  low: int | None = None, high: int | None = None) -> np.ndarray:
    """Values representable in `dt` (already rounded to it), as an array of its storage.

    Floats are normal(0, scale) rounded to `dt`; integers are uniform in [low, high], by default
    the dtype's range clipped to +-100 so that sums and products stay in range.
    """
    dt = dtype(dt)
    rng = np.random.default_rng(seed)
    if dt.is_float:
        values = (rng.standard_normal(shape) * scale).astype(np.float32)
        if dt.mantissa_bits:
            # tf32: keep 10 explicit mantissa bits (truncation keeps the value representable).
            cleared = values.view(np.uint32) & np.uint32(~((1 << 13) - 1) & 0xFFFFFFFF)
            return cleared.view(np.float32)
        return values.astype(dt.storage)
    info = np.iinfo(dt.storage)
    low = max(int(info.min), -100) if low is None else low
    high = min(int(info.max), 100) if high is None else high
    return rng.integers(low, high, shape, endpoint=True).astype(dt.storage)


def seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**32 - 1)


# ---- partitions and free axes ----------------------------------------------------------------
def legal_partition_starts(count: int, partitions: int = TARGET.partitions) -> tuple[int, ...]:
    """The operand rule stated on its own: more than half the partitions start at 0; more than
    a quarter at 0 or the half; fewer at any quadrant boundary (no striding in P)."""
    quarter = partitions // 4
    if count > 2 * quarter:
        return (0,)
    if count > quarter:
        return (0, 2 * quarter)
    return tuple(range(0, partitions, quarter))


@st.composite
def partition_ranges(draw, count: int | None = None, max_count: int = TARGET.partitions
                     ) -> tuple[int, int]:
    """(start, count) of a legal on-chip operand."""
    count = draw(st.integers(1, max_count)) if count is None else count
    return draw(st.sampled_from(legal_partition_starts(count))), count


@st.composite
def free_shapes(draw, total: int | None = None, max_axes: int = 4, max_size: int = 8
                ) -> tuple[int, ...]:
    """Free-axis sizes: arbitrary (each <= max_size) or a factorisation of `total`."""
    axes = draw(st.integers(1, max_axes))
    if total is None:
        return tuple(draw(st.lists(st.integers(1, max_size), min_size=axes, max_size=axes)))
    sizes, remaining = [], total
    for _ in range(axes - 1):
        size = draw(st.sampled_from([d for d in range(1, remaining + 1) if remaining % d == 0]))
        sizes.append(size)
        remaining //= size
    sizes.append(remaining)
    return tuple(draw(st.permutations(sizes)))


@st.composite
def injective_axes(draw, sizes: tuple[int, ...], strided: bool = True,
                   broadcast: bool = False) -> tuple[tuple[int, int], ...]:
    """(stride, size) axes that never touch an element twice (unless `broadcast`).

    The axes are laid out densely over a padded box in a random nesting order, and each may run
    backwards: a mixed-radix numbering with gaps, which is one-to-one.  `broadcast` lets axes
    take stride 0 (legal for reads only).
    """
    if not strided:
        strides, step = [], 1
        for size in reversed(sizes):
            strides.append(step)
            step *= size
        return tuple(zip(reversed(strides), sizes))
    order = draw(st.permutations(range(len(sizes))))
    strides, step = [0] * len(sizes), 1
    for axis in order:  # order[0] is the innermost axis in memory
        backwards = draw(st.booleans())
        strides[axis] = -step if backwards else step
        if broadcast and draw(st.integers(0, 3)) == 0:
            strides[axis] = 0
        step *= sizes[axis] + draw(st.integers(0, 3))
    return tuple(zip(strides, sizes))


def _relative_span(axes: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    low = sum(min(0, s * (n - 1)) for s, n in axes)
    high = sum(max(0, s * (n - 1)) for s, n in axes)
    return low, high


@st.composite
def access_patterns(draw, space: Space = Space.SBUF, dt: DType | str | None = None,
                    partitions: int | None = None, free_size: int | None = None,
                    free_shape: tuple[int, ...] | None = None,
                    region: tuple[int, int] | None = None, strided: bool | None = None,
                    broadcast: bool = False, max_axes: int = 4, max_axis: int = 8,
                    max_partitions: int = TARGET.partitions, any_start: bool = False
                    ) -> AccessPattern:
    """A legal SBUF/PSUM operand that lies within byte `region` of every partition it covers.

    Partition start follows the operand rule (or is any start with `any_start`, as DMA allows);
    up to `max_axes` free axes; sizes from `free_shape`, a factorisation of `free_size`, or
    random; strides dense or padded/reversed/permuted (`strided=None` draws which).
    """
    dt = draw(dtypes()) if dt is None else dtype(dt)
    count = draw(st.integers(1, max_partitions)) if partitions is None else partitions
    if any_start:
        start = draw(st.integers(0, TARGET.partitions - count))
    else:
        start = draw(st.sampled_from(legal_partition_starts(count)))
    sizes = free_shape or draw(free_shapes(free_size, max_axes, max_axis))
    strided = draw(st.booleans()) if strided is None else strided
    axes = draw(injective_axes(tuple(sizes), strided, broadcast))
    lo, hi = region or (0, TARGET.partition_bytes(space))
    size = dt.itemsize
    low, high = _relative_span(axes)
    first = -(-lo // size) - low
    last = hi // size - 1 - high
    assume(first <= last)
    offset = draw(st.one_of(st.just(first), st.integers(first, last)))
    return AccessPattern(space, dt, start, count, offset * size, axes)


@st.composite
def hbm_patterns(draw, tensor: DramTensor, rows: int | None = None,
                 free_size: int | None = None, max_axes: int = 3, strided: bool | None = None
                 ) -> AccessPattern:
    """A pattern over device-memory `tensor`: rows apart by a row stride, each a free pattern."""
    elements = prod(tensor.shape)
    rows = draw(st.integers(1, min(8, elements))) if rows is None else rows
    if free_size is None:
        free_size = draw(st.integers(1, max(1, min(64, elements // rows))))
    sizes = draw(free_shapes(free_size, max_axes, max_size=free_size))
    strided = draw(st.booleans()) if strided is None else strided
    axes = draw(injective_axes(sizes, strided))
    low, high = _relative_span(axes)
    row_stride = high - low + 1 + (draw(st.integers(0, 4)) if strided else 0)
    first = -low
    last = elements - 1 - high - row_stride * (rows - 1)
    assume(first <= last)
    offset = draw(st.one_of(st.just(first), st.integers(first, last)))
    return AccessPattern(Space.HBM, tensor.dtype, 0, rows, offset * tensor.dtype.itemsize, axes,
                         tensor.name, row_stride)


@st.composite
def dense_tiles(draw, space: Space = Space.SBUF, dt: DType | str | None = None,
                partitions: int | None = None, free: int | tuple[int, ...] | None = None,
                offset: int = 0, max_partitions: int = 32) -> tuple[AccessPattern, np.ndarray]:
    """A dense tile at a legal partition range and its values (already in its dtype)."""
    dt = draw(dtypes()) if dt is None else dtype(dt)
    start, count = draw(partition_ranges(partitions, max_partitions))
    if free is None:
        free = draw(free_shapes(max_axes=2, max_size=16))
    sizes = (free,) if isinstance(free, int) else tuple(free)
    ap = AccessPattern(space, dt, start, count, offset, draw(injective_axes(sizes, False)))
    return ap, random_values(dt, ap.shape, draw(seeds()))


@st.composite
def placed(draw, opcode: str, name: str, engine: Engine | str, slot: int,
           dt: DType | str | None = None, partitions: int | None = None,
           free_size: int | None = None, free_shape: tuple[int, ...] | None = None,
           strided: bool | None = None, max_axes: int = 4) -> AccessPattern:
    """Operand `name` of `opcode` on `engine`, in a space its port allows, inside SBUF slot or
    PSUM bank number `slot` (so that operands with distinct slots never overlap)."""
    space = draw(st.sampled_from(_spaces(opcode, name, Engine(engine))))
    region = sbuf_slot(slot) if space is Space.SBUF else psum_bank(slot)
    return draw(access_patterns(space, dt, partitions, free_size, free_shape, region=region,
                                strided=strided, max_axes=max_axes))


# ---- instruction records ------------------------------------------------------------------------
def immediates() -> st.SearchStrategy[float]:
    """Immediate operands: any float but NaN (NaN != NaN would defeat round-trip equality)."""
    return st.floats(allow_nan=False)


def _spaces(opcode: str, operand: str, engine: Engine) -> list[Space]:
    return sorted(OPCODES[opcode].spaces(operand, engine) - {Space.HBM})


@st.composite
def _operand(draw, opcode: str, name: str, engine: Engine, **kwargs) -> AccessPattern:
    space = draw(st.sampled_from(_spaces(opcode, name, engine)))
    return draw(access_patterns(space, **kwargs))


@st.composite
def _per_partition_tile(draw, opcode: str, name: str, engine: Engine, partitions: int,
                        dt: DType | str | None = None) -> AccessPattern:
    return draw(_operand(opcode, name, engine, dt=dt, partitions=partitions, free_size=1))


def _alu_dtypes(op: str) -> st.SearchStrategy[DType]:
    return dtypes("int") if op in BITWISE_OPS else dtypes()


@st.composite
def _scalar_operand(draw, opcode: str, name: str, engine: Engine, partitions: int, op: str):
    """An immediate, or a per-partition [P, 1] tile; integers only for bitwise ops."""
    if draw(st.booleans()):
        kind = "int" if op in BITWISE_OPS else "any"
        return draw(_per_partition_tile(opcode, name, engine, partitions, draw(dtypes(kind))))
    if op in BITWISE_OPS:
        return float(draw(st.integers(0, 31)))
    return draw(immediates())


def _rows_and_free(draw, max_partitions: int = TARGET.partitions) -> tuple[int, int]:
    """Partition count and free size shared by the operands of an element-wise record."""
    return draw(st.integers(1, max_partitions)), draw(st.integers(1, 64))


@st.composite
def _dma_copy(draw, engine: Engine, tensors: tuple[DramTensor, ...]) -> DmaCopy:
    kinds = ["sbuf->sbuf"] + (["hbm->sbuf", "sbuf->hbm", "hbm->hbm"] if tensors else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "hbm->hbm":
        src = draw(hbm_patterns(draw(st.sampled_from(tensors))))
        roomy = [t for t in tensors if prod(t.shape) >= src.elements]
        dst = draw(hbm_patterns(draw(st.sampled_from(roomy)), rows=1, free_size=src.elements,
                                strided=False))
        return DmaCopy(dst, src)
    if kind == "sbuf->sbuf":
        rows, free = _rows_and_free(draw)
        src = draw(access_patterns(Space.SBUF, partitions=rows, free_size=free, any_start=True))
        dst = draw(access_patterns(Space.SBUF, partitions=rows, free_size=free, any_start=True))
        return DmaCopy(dst, src)
    far = draw(hbm_patterns(draw(st.sampled_from(tensors))))
    near = draw(access_patterns(Space.SBUF, partitions=far.partitions, free_size=far.free_size,
                                any_start=True))
    return DmaCopy(near, far) if kind == "hbm->sbuf" else DmaCopy(far, near)


@st.composite
def _matmul(draw, engine: Engine, tensors) -> MatMul:
    k, m = draw(st.integers(1, 128)), draw(st.integers(1, 128))
    n = draw(st.integers(1, TARGET.matmul_max_n))
    stationary = draw(access_patterns(Space.SBUF, draw(dtypes("float")), k, m))
    moving = draw(access_patterns(Space.SBUF, draw(dtypes("float")), k, n))
    bank = draw(st.integers(0, TARGET.psum_banks - 1)) * TARGET.psum_bank_bytes
    # Padding a wide dst would push it over its bank: only narrow ones are drawn strided.
    dst = draw(access_patterns(Space.PSUM, "fp32", m, n, strided=False if n > 128 else None,
                               region=(bank, bank + TARGET.psum_bank_bytes)))
    return MatMul(dst, stationary, moving, draw(st.booleans()))


@st.composite
def _transpose(draw, engine: Engine, tensors) -> Transpose:
    rows, free = draw(st.integers(1, 128)), draw(st.integers(1, TARGET.transpose_max))
    src = draw(access_patterns(Space.SBUF, partitions=rows, free_size=free))
    dst = draw(access_patterns(Space.PSUM, partitions=free, free_size=rows))
    return Transpose(dst, src)


@st.composite
def _activation(draw, engine: Engine, tensors) -> Activation:
    rows, free = _rows_and_free(draw)
    src = draw(_operand("activation", "src", engine, partitions=rows, free_size=free))
    dst = draw(_operand("activation", "dst", engine, partitions=rows, free_size=free))
    scale = draw(st.one_of(immediates(), _per_partition_tile("activation", "scale", engine,
                                                             rows)))
    bias = draw(st.one_of(st.none(), _per_partition_tile("activation", "bias", engine, rows)))
    reduce = draw(st.one_of(st.none(), _per_partition_tile("activation", "reduce", engine,
                                                           rows)))
    return Activation(dst, src, draw(st.sampled_from(ACTIVATIONS)), scale, bias, reduce)


@st.composite
def _tensor_tensor(draw, engine: Engine, tensors) -> TensorTensor:
    rows, free = _rows_and_free(draw)
    op = draw(st.sampled_from(ALU_OPS))
    tiles = [draw(_operand("tensor_tensor", name, engine, dt=draw(_alu_dtypes(op)),
                           partitions=rows, free_size=free)) for name in ("dst", "in0", "in1")]
    return TensorTensor(*tiles, op)


@st.composite
def _tensor_scalar(draw, engine: Engine, tensors) -> TensorScalar:
    rows, free = _rows_and_free(draw)
    op0 = draw(st.sampled_from(ALU_OPS))
    op1 = draw(st.one_of(st.none(), st.sampled_from(ALU_OPS)))
    kind = "int" if op0 in BITWISE_OPS or op1 in BITWISE_OPS else "any"
    dst = draw(_operand("tensor_scalar", "dst", engine, dt=draw(dtypes(kind)), partitions=rows,
                        free_size=free))
    src = draw(_operand("tensor_scalar", "src", engine, dt=draw(dtypes(kind)), partitions=rows,
                        free_size=free))
    operand0 = draw(_scalar_operand("tensor_scalar", "operand0", engine, rows, op0))
    operand1 = None if op1 is None else draw(
        _scalar_operand("tensor_scalar", "operand1", engine, rows, op1))
    return TensorScalar(dst, src, op0, operand0, op1, operand1, draw(st.booleans()),
                        draw(st.booleans()))


@st.composite
def _tensor_reduce(draw, engine: Engine, tensors) -> TensorReduce:
    rows = draw(st.integers(1, 128))
    src = draw(_operand("tensor_reduce", "src", engine, partitions=rows))
    axes = draw(st.lists(st.integers(1, len(src.axes)), min_size=1, max_size=len(src.axes),
                         unique=True))
    kept = prod(n for i, n in enumerate(src.free_shape, start=1) if i not in axes)
    dst = draw(_operand("tensor_reduce", "dst", engine, partitions=rows, free_size=kept))
    return TensorReduce(dst, src, draw(st.sampled_from(REDUCE_OPS)), tuple(axes),
                        draw(st.booleans()), draw(st.booleans()))


@st.composite
def _tensor_copy(draw, engine: Engine, tensors) -> TensorCopy:
    rows, free = _rows_and_free(draw)
    return TensorCopy(*(draw(_operand("tensor_copy", name, engine, partitions=rows,
                                      free_size=free)) for name in ("dst", "src")))


@st.composite
def _tensor_tensor_scan(draw, engine: Engine, tensors) -> TensorTensorScan:
    rows, free = _rows_and_free(draw)
    op0, op1 = draw(st.sampled_from(ALU_OPS)), draw(st.sampled_from(ALU_OPS))
    kind = "int" if op0 in BITWISE_OPS or op1 in BITWISE_OPS else "any"
    dst, in0, in1 = (draw(_operand("tensor_tensor_scan", name, engine, dt=draw(dtypes(kind)),
                                   partitions=rows, free_size=free))
                     for name in ("dst", "in0", "in1"))
    initial = draw(_scalar_operand("tensor_tensor_scan", "initial", engine, rows, op0))
    return TensorTensorScan(dst, in0, in1, initial, op0, op1)


@st.composite
def _memset(draw, engine: Engine, tensors) -> Memset:
    return Memset(draw(_operand("memset", "dst", engine)), draw(immediates()))


_AFFINE = st.integers(-1000, 1000)


@st.composite
def _iota(draw, engine: Engine, tensors) -> Iota:
    dst = draw(_operand("iota", "dst", engine))
    steps = tuple(draw(_AFFINE) for _ in dst.axes)
    return Iota(dst, draw(_AFFINE), draw(_AFFINE), steps)


@st.composite
def _affine_select(draw, engine: Engine, tensors) -> AffineSelect:
    rows, free = _rows_and_free(draw)
    src = draw(_operand("affine_select", "src", engine, partitions=rows, free_size=free))
    dst = draw(_operand("affine_select", "dst", engine, partitions=rows, free_size=free))
    steps = tuple(draw(_AFFINE) for _ in src.axes)
    return AffineSelect(dst, src, draw(st.sampled_from(AFFINE_CMPS)), draw(immediates()),
                        draw(_AFFINE), draw(_AFFINE), steps)


@st.composite
def _bn_stats(draw, engine: Engine, tensors) -> BnStats:
    rows = draw(st.integers(1, 128))
    src = draw(_operand("bn_stats", "src", engine, partitions=rows,
                        free_size=draw(st.integers(1, BnStats.fmax))))
    dst = draw(_operand("bn_stats", "dst", engine, dt="fp32", partitions=rows, free_size=6))
    return BnStats(dst, src)


@st.composite
def _bn_aggr(draw, engine: Engine, tensors) -> BnAggr:
    rows = draw(st.integers(1, 128))
    src = draw(_operand("bn_aggr", "src", engine, partitions=rows,
                        free_size=3 * draw(st.integers(1, 8))))
    dst = draw(_operand("bn_aggr", "dst", engine, partitions=rows, free_size=2))
    return BnAggr(dst, src)


@st.composite
def _reciprocal(draw, engine: Engine, tensors) -> Reciprocal:
    rows, free = _rows_and_free(draw)
    return Reciprocal(*(draw(_operand("reciprocal", name, engine, partitions=rows,
                                      free_size=free)) for name in ("dst", "src")))


_RANKS = st.lists(st.integers(0, 23), min_size=1, max_size=4, unique=True).map(tuple)


@st.composite
def _collective(draw, engine: Engine, tensors, opcode: str):
    """A collective between SBUF operands on a DMA queue (element counts as the opcode needs)."""
    ranks = draw(_RANKS)
    rows, free = _rows_and_free(draw, 16)
    block = draw(access_patterns(Space.SBUF, partitions=rows, free_size=free, any_start=True))
    if opcode in ("send", "recv"):
        record = Send if opcode == "send" else Recv
        return record(block, draw(st.integers(0, 23)), draw(st.integers(0, 9)))
    if opcode == "all_reduce":
        other = draw(access_patterns(Space.SBUF, partitions=rows, free_size=free,
                                     any_start=True))
        return AllReduce(other, block, ranks, draw(st.sampled_from(REDUCE_OPS)))
    whole = draw(access_patterns(Space.SBUF, partitions=rows, free_size=free * len(ranks),
                                 any_start=True))
    if opcode == "all_gather":
        return AllGather(whole, block, ranks)
    return ReduceScatter(block, whole, ranks, draw(st.sampled_from(REDUCE_OPS)))


_BUILDERS = {
    "wait": lambda engine, tensors: st.builds(Wait, st.integers(0, TARGET.semaphores - 1),
                                              st.integers(1, 4)),
    "signal": lambda engine, tensors: st.builds(Signal, st.integers(0, TARGET.semaphores - 1)),
    "dma_copy": _dma_copy,
    "matmul": _matmul,
    "transpose": _transpose,
    "activation": _activation,
    "tensor_tensor": _tensor_tensor,
    "tensor_scalar": _tensor_scalar,
    "tensor_reduce": _tensor_reduce,
    "tensor_copy": _tensor_copy,
    "tensor_tensor_scan": _tensor_tensor_scan,
    "memset": _memset,
    "iota": _iota,
    "affine_select": _affine_select,
    "bn_stats": _bn_stats,
    "bn_aggr": _bn_aggr,
    "reciprocal": _reciprocal,
    **{name: (lambda engine, tensors, name=name: _collective(engine, tensors, name))
       for name in ("all_reduce", "all_gather", "reduce_scatter", "send", "recv")},
}
INSTRUCTION_STRATEGIES = frozenset(_BUILDERS)  # tests/test_program.py checks it covers OPCODES


@st.composite
def instructions(draw, opcode: str | None = None, engine: Engine | str | None = None,
                 tensors: tuple[DramTensor, ...] = ()):
    """A record of `opcode` (any opcode if None) that is legal on `engine` (its default engine
    if None), whose HBM operands, if any, lie within `tensors`."""
    opcode = draw(st.sampled_from(sorted(_BUILDERS))) if opcode is None else opcode
    spec = OPCODES[opcode]
    engine = draw(st.sampled_from(spec.engines)) if engine is None else Engine(engine)
    return draw(_BUILDERS[opcode](engine, tuple(tensors)))


# ---- programs ----------------------------------------------------------------------------------
_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)


@st.composite
def dram_tensors(draw, name: str) -> DramTensor:
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 16), min_size=rank, max_size=rank)))
    return DramTensor(name, shape, draw(dtypes()), draw(st.sampled_from(("input", "output",
                                                                          "scratch"))))


@st.composite
def programs(draw, max_streams: int = 4, max_instructions: int = 3, max_syncs: int = 4,
             collectives: bool = False) -> Program:
    """A Program that passes `validate(INF2)` and cannot deadlock (on one core: collective
    instructions, which need partner cores, only with `collectives`).

    Streams are drawn in an order; a semaphore is signalled (once or twice) by one stream only and
    waited on by a later stream in that order, for at most the number of times it is signalled.
    Since the first stream never waits, and every later one only waits for earlier ones, the
    waits form no cycle.
    """
    names = draw(st.lists(_NAMES, min_size=0, max_size=3, unique=True))
    tensors = tuple(draw(dram_tensors(n)) for n in names)
    streams = draw(st.lists(st.sampled_from(TARGET.stream_names), min_size=1,
                            max_size=max_streams, unique=True))
    bodies: dict[str, list] = {}
    for stream in streams:
        engine = stream_engine(stream)
        opcodes = sorted(n for n, spec in OPCODES.items() if n in _BUILDERS
                         and engine in spec.engines and n not in ("wait", "signal")
                         and (collectives or not spec.collective))
        count = draw(st.integers(0, max_instructions if opcodes else 0))
        bodies[stream] = [draw(instructions(draw(st.sampled_from(opcodes)), engine, tensors))
                          for _ in range(count)]
    if len(streams) > 1:
        for sem in range(draw(st.integers(0, max_syncs))):
            producer, consumer = sorted(draw(st.lists(st.integers(0, len(streams) - 1),
                                                      min_size=2, max_size=2, unique=True)))
            signals = draw(st.integers(1, 2))
            body = bodies[streams[producer]]
            for _ in range(signals):
                body.insert(draw(st.integers(0, len(body))), Signal(sem))
            body = bodies[streams[consumer]]
            body.insert(draw(st.integers(0, len(body))), Wait(sem, draw(st.integers(1, signals))))
    return Program(draw(_NAMES), tensors, tuple(Stream(s, tuple(bodies[s])) for s in streams))
