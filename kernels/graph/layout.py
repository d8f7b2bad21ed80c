"""Tile-size choice per operator, and the SBUF/PSUM working set a tile choice implies.

Each tiling class of `ops.OPS` (gemm, attention, elementwise, rows, pool) has a frozen tile record,
a view of an operator as a tiling problem, a rule that derives tiles from the target's limits
(matmul K <= matmul_max_k on partitions, M <= matmul_max_m stationary columns, N <= matmul_max_n
moving columns and one fp32 PSUM bank per accumulation tile [A2]), the candidates a cost callable
may compare, the limits a choice must respect, and the working set it needs per partition.
Data-movement ops (reshape, transpose, concat, split, slice, gather, collectives) and sources
run as DMA between HBM tensors and have no tiles.

The working-set model counts the tiles a kernel holds at once, `bufs` deep (double buffering by
default): the rule's choices use at most RULE_SBUF_FRACTION of SBUF so a neighbour's prefetch fits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import prod

from isa.target import Target
from kernels.graph.ir import Graph
from kernels.graph.ops import OPS, Operator
from kernels.graph.tensor import GraphError, TensorType

RULE_SBUF_FRACTION = 0.5  # chosen: half of each partition for one node's tiles, half for others
PSUM_ACC_BYTES = 4  # PSUM accumulates in fp32 [A2]


def _positive(record: object) -> None:
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GraphError(f"{type(record).__name__}.{f.name}={value!r} must be a positive int")


@dataclass(frozen=True)
class GemmTiles:
    """out[M, N] += stationary[K, M]^T @ moving[K, N] in tiles of (tile_m, tile_k, tile_n)."""

    tile_m: int
    tile_k: int
    tile_n: int
    bufs: int = 2

    def __post_init__(self) -> None:
        _positive(self)

    def __str__(self) -> str:
        return f"gemm(m={self.tile_m},k={self.tile_k},n={self.tile_n},bufs={self.bufs})"


@dataclass(frozen=True)
class AttentionTiles:
    """Flash-style attention: tile_q queries on partitions against tile_kv keys at a time."""

    tile_q: int
    tile_kv: int
    bufs: int = 2

    def __post_init__(self) -> None:
        _positive(self)

    def __str__(self) -> str:
        return f"attention(q={self.tile_q},kv={self.tile_kv},bufs={self.bufs})"


@dataclass(frozen=True)
class RowTiles:
    """tile_rows rows on partitions, tile_free elements of each row per tile."""

    tile_rows: int
    tile_free: int
    bufs: int = 2

    def __post_init__(self) -> None:
        _positive(self)

    def __str__(self) -> str:
        return f"rows(p={self.tile_rows},free={self.tile_free},bufs={self.bufs})"


@dataclass(frozen=True)
class PoolTiles:
    """tile_planes (n, c) image planes on partitions, tile_out_h output rows per tile."""

    tile_planes: int
    tile_out_h: int
    bufs: int = 2

    def __post_init__(self) -> None:
        _positive(self)

    def __str__(self) -> str:
        return f"pool(p={self.tile_planes},out_h={self.tile_out_h},bufs={self.bufs})"


Tiles = GemmTiles | AttentionTiles | RowTiles | PoolTiles


@dataclass(frozen=True)
class Layout:
    """The tiles chosen for a node and who chose them: "rule", "user" or "cost"."""

    tiles: Tiles
    source: str

    def __post_init__(self) -> None:
        if self.source not in ("rule", "user", "cost"):
            raise GraphError(f"layout source {self.source!r} must be rule, user or cost")

    def __str__(self) -> str:
        return f"{self.tiles} by {self.source}"


@dataclass(frozen=True)
class WorkingSet:
    """Bytes per partition a node's tiles occupy in SBUF and PSUM."""

    sbuf_bytes: int
    psum_bytes: int

    def __str__(self) -> str:
        return f"sbuf {self.sbuf_bytes} B psum {self.psum_bytes} B per partition"


# ---- problems: an operator seen by its tiling class -------------------------------------------
@dataclass(frozen=True)
class GemmProblem:
    batch: int  # independent GEMMs (batch dims, conv groups)
    m: int
    k: int
    n: int
    in_bytes: int
    out_bytes: int
    bias: bool


@dataclass(frozen=True)
class AttentionProblem:
    batch: int
    sq: int
    sk: int
    d: int
    dv: int
    in_bytes: int


@dataclass(frozen=True)
class RowProblem:
    rows: int
    free: int
    operands: int  # tensors streamed per tile (inputs and outputs)
    itemsize: int
    whole_row: bool  # the op reduces along the row: a tile must hold all of it


@dataclass(frozen=True)
class PoolProblem:
    planes: int
    padded_w: int
    out_h: int
    out_w: int
    kernel_h: int
    stride_h: int
    itemsize: int


def _gemm_problem(op: Operator, ins: tuple[TensorType, ...],
                  outs: tuple[TensorType, ...]) -> GemmProblem:
    isz, osz = ins[0].dtype.itemsize, outs[0].dtype.itemsize
    if op.op == "conv2d":  # implicit GEMM per group: [O/g] x [C/g*kh*kw] x [N*Ho*Wo]
        o, cg, kh, kw = ins[1].shape
        n, _, ho, wo = outs[0].shape
        return GemmProblem(op.groups, o // op.groups, cg * kh * kw, n * ho * wo, isz, osz,
                           len(ins) == 3)
    if op.op == "batch_matmul":
        out = outs[0].shape
        return GemmProblem(prod(out[:-2]), out[-2], ins[0].shape[-1], out[-1], isz, osz, False)
    x, out = ins[0].shape, outs[0].shape
    return GemmProblem(1, prod(x[:-1]), x[-1], out[-1], isz, osz, len(ins) == 3)


def _attention_problem(op: Operator, ins: tuple[TensorType, ...],
                       outs: tuple[TensorType, ...]) -> AttentionProblem:
    q, k, v = ins[:3]
    return AttentionProblem(prod(q.shape[:-2]), q.shape[-2], k.shape[-2], q.shape[-1],
                            v.shape[-1], q.dtype.itemsize)


def _row_problem(whole_row: bool) -> Callable[..., RowProblem]:
    def problem(op: Operator, ins: tuple[TensorType, ...],
                outs: tuple[TensorType, ...]) -> RowProblem:
        out = outs[0]
        axis = op.axis % out.ndim if op.op == "softmax" else out.ndim - 1
        free = out.shape[axis] if out.ndim else 1
        itemsize = max(t.dtype.itemsize for t in ins + outs)
        return RowProblem(out.size // max(free, 1), free, len(ins) + len(outs), itemsize,
                          whole_row)
    return problem


def _pool_problem(op: Operator, ins: tuple[TensorType, ...],
                  outs: tuple[TensorType, ...]) -> PoolProblem:
    n, c, h, w = ins[0].shape
    _, _, ho, wo = outs[0].shape
    if op.op == "global_avgpool":
        return PoolProblem(n * c, w, 1, 1, h, 1, ins[0].dtype.itemsize)
    top, left, bottom, right = op.padding
    return PoolProblem(n * c, w + left + right, ho, wo, op.kernel[0], op.stride[0],
                       ins[0].dtype.itemsize)


# ---- working sets -----------------------------------------------------------------------------
def _gemm_ws(t: GemmTiles, p: GemmProblem) -> WorkingSet:
    sbuf = t.bufs * (t.tile_m * p.in_bytes + t.tile_n * p.in_bytes + t.tile_n * p.out_bytes)
    sbuf += t.tile_n * p.in_bytes if p.bias else 0
    return WorkingSet(sbuf, t.bufs * t.tile_n * PSUM_ACC_BYTES)


def _attention_ws(t: AttentionTiles, p: AttentionProblem) -> WorkingSet:
    # q^T and k^T tiles (head dim on partitions), v tile, fp32 probabilities, fp32 output
    # accumulator and the running max / sum per query row.
    sbuf = t.bufs * ((t.tile_q + t.tile_kv + p.dv) * p.in_bytes
                     + (t.tile_kv + p.dv + 2) * PSUM_ACC_BYTES)
    return WorkingSet(sbuf, t.bufs * (t.tile_kv + p.dv) * PSUM_ACC_BYTES)


def _row_ws(t: RowTiles, p: RowProblem) -> WorkingSet:
    return WorkingSet(t.bufs * t.tile_free * p.operands * p.itemsize, 0)


def _pool_ws(t: PoolTiles, p: PoolProblem) -> WorkingSet:
    in_rows = (t.tile_out_h - 1) * p.stride_h + p.kernel_h
    return WorkingSet(t.bufs * (in_rows * p.padded_w + t.tile_out_h * p.out_w) * p.itemsize, 0)


# ---- limits (legality on the target; capacity is the budget pass's job) ------------------------
def _bank_elems(target: Target) -> int:
    return target.psum_bank_bytes // PSUM_ACC_BYTES


def _gemm_limits(t: GemmTiles, p: GemmProblem, target: Target) -> list[str]:
    out = []
    if t.tile_k > target.matmul_max_k:
        out.append(f"tile_k={t.tile_k} exceeds matmul_max_k={target.matmul_max_k}")
    if t.tile_m > min(target.matmul_max_m, target.partitions):
        out.append(f"tile_m={t.tile_m} exceeds matmul_max_m={target.matmul_max_m}")
    if t.tile_n > target.matmul_max_n:
        out.append(f"tile_n={t.tile_n} exceeds matmul_max_n={target.matmul_max_n}")
    if t.tile_n > _bank_elems(target):
        out.append(f"tile_n={t.tile_n} fp32 accumulators exceed one PSUM bank "
                   f"({target.psum_bank_bytes} B)")
    out += _no_larger(t, {"tile_m": p.m, "tile_k": p.k, "tile_n": p.n})
    return out


def _attention_limits(t: AttentionTiles, p: AttentionProblem, target: Target) -> list[str]:
    out = []
    if t.tile_q > min(target.matmul_max_m, target.partitions):
        out.append(f"tile_q={t.tile_q} exceeds matmul_max_m={target.matmul_max_m}")
    if t.tile_kv > min(target.matmul_max_n, _bank_elems(target)):
        out.append(f"tile_kv={t.tile_kv} exceeds matmul_max_n={target.matmul_max_n} or one "
                   "PSUM bank of fp32 scores")
    if p.dv > _bank_elems(target):
        out.append(f"value head dim {p.dv} exceeds one PSUM bank of fp32 accumulators")
    out += _no_larger(t, {"tile_q": p.sq, "tile_kv": p.sk})
    return out


def _row_limits(t: RowTiles, p: RowProblem, target: Target) -> list[str]:
    out = []
    if t.tile_rows > target.partitions:
        out.append(f"tile_rows={t.tile_rows} exceeds {target.partitions} partitions")
    if p.whole_row and t.tile_free != p.free:
        out.append(f"reduces along rows: tile_free must be the whole row ({p.free}), got "
                   f"{t.tile_free}")
    if t.tile_free > target.max_axis_size:
        out.append(f"tile_free={t.tile_free} exceeds max_axis_size={target.max_axis_size}")
    out += _no_larger(t, {"tile_rows": p.rows, "tile_free": p.free})
    return out


def _pool_limits(t: PoolTiles, p: PoolProblem, target: Target) -> list[str]:
    out = []
    if t.tile_planes > target.partitions:
        out.append(f"tile_planes={t.tile_planes} exceeds {target.partitions} partitions")
    out += _no_larger(t, {"tile_planes": p.planes, "tile_out_h": p.out_h})
    return out


def _no_larger(tiles: object, dims: Mapping[str, int]) -> list[str]:
    return [f"{name}={getattr(tiles, name)} is larger than the dimension it tiles ({dim})"
            for name, dim in dims.items() if getattr(tiles, name) > dim]


# ---- rules and candidates ---------------------------------------------------------------------
def _fits(ws: WorkingSet, target: Target, fraction: float = 1.0) -> bool:
    return (ws.sbuf_bytes <= fraction * target.sbuf_partition_bytes
            and ws.psum_bytes <= target.psum_partition_bytes)


def _gemm_rule(p: GemmProblem, target: Target) -> GemmTiles:
    return GemmTiles(min(p.m, target.matmul_max_m, target.partitions),
                     min(p.k, target.matmul_max_k),
                     min(p.n, target.matmul_max_n, _bank_elems(target)))


def _gemm_candidates(p: GemmProblem, target: Target) -> list[GemmTiles]:
    rule = _gemm_rule(p, target)
    return [GemmTiles(m, rule.tile_k, n, bufs)
            for bufs in (2, 3) for m in _halvings(rule.tile_m, 2)
            for n in _halvings(rule.tile_n, 3)]


def _attention_rule(p: AttentionProblem, target: Target) -> AttentionTiles:
    return AttentionTiles(min(p.sq, target.matmul_max_m, target.partitions),
                          min(p.sk, target.matmul_max_n, _bank_elems(target)))


def _attention_candidates(p: AttentionProblem, target: Target) -> list[AttentionTiles]:
    rule = _attention_rule(p, target)
    return [AttentionTiles(q, kv) for q in _halvings(rule.tile_q, 2)
            for kv in _halvings(rule.tile_kv, 3)]


def _row_rule(p: RowProblem, target: Target) -> RowTiles:
    rows = min(p.rows, target.partitions)
    if p.whole_row:
        tiles = RowTiles(rows, p.free, 2)
        fits = _fits(_row_ws(tiles, p), target, RULE_SBUF_FRACTION)
        return tiles if fits else RowTiles(rows, p.free, 1)
    cap = int(RULE_SBUF_FRACTION * target.sbuf_partition_bytes) // (2 * p.operands * p.itemsize)
    return RowTiles(rows, max(1, min(p.free, cap, target.max_axis_size)), 2)


def _row_candidates(p: RowProblem, target: Target) -> list[RowTiles]:
    rule = _row_rule(p, target)
    frees = [rule.tile_free] if p.whole_row else _halvings(rule.tile_free, 3)
    return [RowTiles(rule.tile_rows, f, bufs) for bufs in (1, 2, 3) for f in frees]


def _pool_rule(p: PoolProblem, target: Target) -> PoolTiles:
    budget = RULE_SBUF_FRACTION * target.sbuf_partition_bytes
    out_h = p.out_h
    while out_h > 1 and not _pool_ws(PoolTiles(1, out_h), p).sbuf_bytes <= budget:
        out_h = (out_h + 1) // 2
    return PoolTiles(min(p.planes, target.partitions), out_h)


def _pool_candidates(p: PoolProblem, target: Target) -> list[PoolTiles]:
    rule = _pool_rule(p, target)
    return [PoolTiles(rule.tile_planes, h, bufs) for bufs in (2, 3)
            for h in _halvings(rule.tile_out_h, 3)]


def _halvings(value: int, count: int) -> list[int]:
    out = []
    for _ in range(count):
        if value not in out:
            out.append(value)
        value = max(1, value // 2)
    return out


@dataclass(frozen=True)
class Tiling:
    """One tiling class: its tile record and how to view, choose, limit and size it."""

    record: type
    problem: Callable[[Operator, tuple[TensorType, ...], tuple[TensorType, ...]], object]
    rule: Callable[[object, Target], object]
    candidates: Callable[[object, Target], list]
    limits: Callable[[object, object, Target], list[str]]
    working_set: Callable[[object, object], WorkingSet]


TILING: dict[str, Tiling | None] = {
    "source": None,
    "dma": None,
    "gemm": Tiling(GemmTiles, _gemm_problem, _gemm_rule, _gemm_candidates, _gemm_limits,
                   _gemm_ws),
    "attention": Tiling(AttentionTiles, _attention_problem, _attention_rule,
                        _attention_candidates, _attention_limits, _attention_ws),
    "elementwise": Tiling(RowTiles, _row_problem(False), _row_rule, _row_candidates,
                          _row_limits, _row_ws),
    "rows": Tiling(RowTiles, _row_problem(True), _row_rule, _row_candidates, _row_limits,
                   _row_ws),
    "pool": Tiling(PoolTiles, _pool_problem, _pool_rule, _pool_candidates, _pool_limits,
                   _pool_ws),
}


def tiling_of(graph: Graph, node: str) -> Tiling | None:
    return TILING[OPS[graph.op(node).op].tiling]


def problem_of(graph: Graph, node: str) -> object:
    tiling = tiling_of(graph, node)
    if tiling is None:
        raise GraphError(f"({graph.op(node).op}) has no tiles", node)
    return tiling.problem(graph.op(node), graph.input_types(node), graph.types(node))


def check_request(graph: Graph, node: str, params: Mapping[str, int]) -> None:
    """Reject a layout request naming parameters the node's tiling does not have."""
    tiling = tiling_of(graph, node)
    op = graph.op(node).op
    if tiling is None:
        raise GraphError(f"({op}) moves data by DMA and has no tile parameters", node)
    names = [f.name for f in dataclasses.fields(tiling.record)]
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise GraphError(f"({op}) has no tile parameter(s) {', '.join(unknown)}; its "
                         f"parameters: {', '.join(names)}", node)
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GraphError(f"({op}) tile parameter {name}={value!r} must be a positive int",
                             node)


def layout_violations(graph: Graph, node: str, layout: Layout, target: Target) -> list[str]:
    """What is illegal about `layout` for `node` on `target` (empty if nothing)."""
    tiling = tiling_of(graph, node)
    if tiling is None:
        return [f"{graph.op(node).op} has no tiles but carries layout {layout}"]
    if not isinstance(layout.tiles, tiling.record):
        return [f"layout {layout} is not a {tiling.record.__name__}"]
    return tiling.limits(layout.tiles, problem_of(graph, node), target)


def working_set(graph: Graph, node: str, tiles: Tiles) -> WorkingSet:
    tiling = tiling_of(graph, node)
    return tiling.working_set(tiles, problem_of(graph, node))


@dataclass(frozen=True)
class LayoutQuery:
    """What a cost callable is asked: the cost of running `node` with `tiles` on `target`."""

    node: str
    op: Operator
    inputs: tuple[TensorType, ...]
    outputs: tuple[TensorType, ...]
    tiles: Tiles
    target: Target


CostFn = Callable[[LayoutQuery], float]


def choose_layout(graph: Graph, node: str, target: Target, cost: CostFn | None) -> Layout | None:
    """The node's layout: the user's request on top of the rule, else the cheapest legal
    candidate under `cost`, else the rule."""
    tiling = tiling_of(graph, node)
    if tiling is None:
        return None
    problem = problem_of(graph, node)
    rule = tiling.rule(problem, target)
    request = graph.annotations(node).get("layout_request")
    if request:
        return Layout(dataclasses.replace(rule, **dict(request)), "user")
    if cost is None:
        return Layout(rule, "rule")
    legal = [c for c in dict.fromkeys([rule, *tiling.candidates(problem, target)])
             if not tiling.limits(c, problem, target)
             and _fits(tiling.working_set(c, problem), target)]
    if not legal:
        raise GraphError(f"({graph.op(node).op}) no tile candidate fits {target.name}", node)
    op, ins, outs = graph.op(node), graph.input_types(node), graph.types(node)
    costs = []
    for tiles in legal:
        value = float(cost(LayoutQuery(node, op, ins, outs, tiles, target)))
        if not value >= 0:
            raise GraphError(f"({op.op}) cost callable returned {value!r} for {tiles}", node)
        costs.append(value)
    best = min(range(len(legal)), key=lambda i: (costs[i], i))
    return Layout(legal[best], "cost")
