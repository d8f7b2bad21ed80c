"""Lowering: a compiled operator graph becomes one traced NKI program per core (the "model
kernel"), built from the kernel library; the compiler's `lower` pass calls `lower(graph, target)`.

Every node is lowered in schedule (topological) order inside one trace session, so the whole
graph is one `isa.Program` whose intermediates are device-memory (HBM) tensors: each library
kernel allocates its result in HBM and is inlined.  Activations are row-major in their graph
shape: token-major `[tokens, features]` for transformers, NCHW for images.  Per operator:

* `linear` / `matmul`: x [T, K] is transposed on the Tensor engine (library `transpose`) and
  the library `matmul_hoisted` computes x @ W with lhsT = x^T and rhs = W [K, N]; its epilogue
  adds the bias and applies the activation while evicting PSUM (fp32, one rounding), so a
  fused `linear` costs no extra pass over HBM.  `batch_matmul`: the same per batch index.
  Gemm tiles (tile_m, tile_k, tile_n) are the kernel's TILE_M, TILE_K, TILE_N.
* `conv2d`: library `conv2d` (implicit GEMM), bias and a following relu (or other activation)
  in its epilogue; constant weights are stored pre-transposed ([C_in, KH, KW, C_out], a
  compile-time relayout) so their load is contiguous.  tile_n / tile_m are TILE_N / TILE_M.
* `attention`: library flash `attention` with its additive mask; tile_q -> Q_TILE, tile_kv ->
  KV_TILE (a multiple of 128).  Causal attention needs Sq = Sk (or Sq = 1, which sees all keys).
* `softmax` (last axis), `layernorm`, `rmsnorm`: the library's row kernels on [rows, last axis].
  `add_layernorm`: library `add` then `layernorm` (its second output is the sum).
* element-wise: library `binary` (numpy broadcasting as full / row / column / scalar operands of
  the output seen as [rows, last axis]; an operand broadcast any other way is first expanded by
  one DMA whose access pattern repeats it) and `unary` (Scalar-engine activation).  Where no
  operand broadcasts by row or column, g rows are folded into one partition row ([R, C] ->
  [R/g, C*g], at least 128 rows left), so NCHW tensors with short rows still move in large
  tiles; F_TILE is tile_free x g.
* pooling: library `maxpool` / `avgpool` (square windows, symmetric padding); `global_avgpool`
  is `avgpool` over the whole (square) plane.
* data movement: `reshape` is a new view of the same HBM bytes (no instruction); `transpose`,
  `concat`, `split` and `slice` are DMA copies HBM -> HBM whose access patterns do the
  permutation (split into several DMAs only where an axis exceeds the access-pattern limits).
* `gather` with run-time indices (an embedding lookup of `input_ids`) is done on the host: the
  gathered rows are a program input, computed by `LoweredModel.feeds` from the graph's table and
  the ids.  Chosen because the ISA has no indirect DMA; a one-hot matmul would instead stream
  the whole table through the Tensor engine on every inference (30522 x 1024 for BERT-large:
  125 MB of fp32 per run), which no real deployment does.  `gather` with constant indices from
  an activation is a DMA per index.

A relu or other unary activation that is the only user of a `conv2d` is computed in the
convolution's epilogue (its record says `fused_into`).  Tile parameters the library kernels
have no parameter for (bufs, the row tiles of the row kernels, pool tiles) stay in the graph's
layout annotation and do not change the program.  Each intermediate is a program tensor of its
own (programs address HBM by tensor name): the hbm_placement pass's arena offsets are reported,
not used.  Each node's record lists the kernels it called, the tile parameters they got and the
instruction index range it produced in every stream, so reports attribute time to operators.

Multi-core: a data-parallel graph (`partition` pass, "data") is lowered once for the per-core
shard and run by every core on its slice of the batch; a pipeline graph is lowered to one program
per stage, the tensors crossing stages moved by send/recv between the cores.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from isa.dtypes import DType, cast
from isa.instructions import Recv, Send
from isa.program import Program
from isa.target import Target
from isa.target import target as resolve_target
from kernels.graph.ir import Graph
from kernels.graph.ops import OPS, slice_bounds
from kernels.graph.partition import DataShard, PipelinePlan, PipelineStage
from kernels.graph.rewrite import infer_types
from kernels.graph.tensor import GraphError, TensorType, Value
from kernels.library import attention as attention_kernels
from kernels.library import conv as conv_kernels
from kernels.library import elementwise, matmul, norms, softmax
from kernels.library import transpose as transpose_kernels
from kernels.nki import NkiError, NkiTensor, context
from kernels.nki import isa as nisa
from kernels.nki import language as nl
from kernels.nki.tensor import View
from kernels.trace.tracer import Tracer

P_MAX = 128
MAX_AXIS_SIZE = 65535  # access-pattern axis sizes are uint16 [A2]
MAX_AXIS_STRIDE = 32767  # and element strides int16
MAX_COPY_DMAS = 65536  # a copy that needs more DMAs than this is refused
BINARY_KERNEL_OPS = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide"}
UNARY_KERNEL_OPS = {"relu": "relu", "silu": "silu", "tanh": "tanh", "sigmoid": "sigmoid",
                    "exp": "exp"}
# Graph activation names -> the library epilogue's names.
EPILOGUE = {"none": "none", "relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_apprx_tanh",
            "silu": "silu", "tanh": "tanh", "sigmoid": "sigmoid"}
# Unary ops a convolution's epilogue may absorb, and the activation they become there.
CONV_ABSORBS = {"relu": "relu", "silu": "silu", "tanh": "tanh", "sigmoid": "sigmoid"}


class LoweringError(GraphError):
    """A node the lowering cannot turn into kernels; the message names the node and why."""


# ---- records ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Binding:
    """Where the values of one program input tensor come from.

    kind "input": graph input `node`; "constant": weight `node`, permuted by `perm` if given;
    "host_gather": rows of constant `source` picked by graph input `node` (a `gather` node is
    `gather`); "zeros": a synthetic zero tensor.  `split_axis` is the axis a data-parallel run
    splits over the cores (None: every core gets all of it).
    """

    tensor: str
    kind: str
    node: str
    shape: tuple[int, ...]
    dtype: DType
    perm: tuple[int, ...] | None = None
    source: str | None = None
    gather: str | None = None
    axis: int = 0
    split_axis: int | None = None


@dataclass(frozen=True)
class OutputBinding:
    """Graph output `name` is program `program`'s tensor `tensor`, reshaped to `shape`."""

    name: str
    program: int
    tensor: str
    shape: tuple[int, ...]
    split_axis: int | None = None


@dataclass(frozen=True)
class Span:
    """Instructions [start, end) of one stream of one program."""

    stream: str
    start: int
    end: int


@dataclass(frozen=True)
class NodeRecord:
    """What one graph node became: kernels called, the tile parameters they got, and the
    instructions it produced (per stream); `fused_into` names the node that computed it."""

    node: str
    op: str
    program: int
    kernels: tuple[str, ...]
    layout: tuple[tuple[str, Any], ...]
    spans: tuple[Span, ...]
    fused_into: str | None = None
    note: str = ""

    @property
    def instructions(self) -> int:
        return sum(s.end - s.start for s in self.spans)


@dataclass(frozen=True)
class StageTransfer:
    """A tensor sent from one pipeline stage's core to another's."""

    value: str
    src: int
    dst: int
    tag: int
    nbytes: int


@dataclass(frozen=True)
class LoweredModel:
    """The lowered graph: one program per core (data parallel: one program every core runs),
    where each program input comes from, where each graph output goes, per-node records."""

    name: str
    target: str
    partition: str | None
    cores: int
    programs: tuple[Program, ...]
    inputs: tuple[tuple[Binding, ...], ...]  # per program
    outputs: tuple[OutputBinding, ...]
    nodes: tuple[NodeRecord, ...]
    transfers: tuple[StageTransfer, ...] = ()

    @property
    def instruction_count(self) -> int:
        return sum(p.instruction_count for p in self.programs)

    @property
    def replicas(self) -> int:
        """Programs a run executes: `cores` copies of the one program when data parallel."""
        return self.cores if self.partition == "data" else len(self.programs)

    def feeds(self, graph: Graph, inputs: Mapping[str, Any]) -> list[dict[str, np.ndarray]]:
        """The input arrays of every core's program (in core order) for graph inputs `inputs`
        (name -> array); weights come from `graph`, the compiled graph this was lowered from."""
        expected = graph.graph_inputs
        missing = sorted(set(expected) - set(inputs))
        unknown = sorted(set(inputs) - set(expected))
        if missing or unknown:
            raise GraphError(f"graph {graph.name}: inputs missing {missing or '-'}, unknown "
                             f"{unknown or '-'}; it takes {', '.join(expected) or 'none'}")
        feeds = []
        for core in range(self.replicas):
            program = 0 if self.partition == "data" else core
            feed = {}
            for binding in self.inputs[program]:
                value = _binding_value(binding, graph, inputs)
                if self.partition == "data" and binding.split_axis is not None:
                    value = np.array_split(value, self.cores, axis=binding.split_axis)[core]
                feed[binding.tensor] = np.ascontiguousarray(value).reshape(binding.shape)
            feeds.append(feed)
        return feeds

    def collect(self, outputs: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Graph outputs by name from every core's output tensors (in core order)."""
        result = {}
        for out in self.outputs:
            if self.partition == "data" and out.split_axis is not None:
                parts = [np.asarray(core[out.tensor]).reshape(_shard_shape(
                    out.shape, out.split_axis, self.cores)) for core in outputs]
                result[out.name] = np.concatenate(parts, axis=out.split_axis)
            else:
                result[out.name] = np.asarray(outputs[out.program][out.tensor]).reshape(
                    out.shape)
        return result

    def node(self, node: str) -> NodeRecord:
        for record in self.nodes:
            if record.node == node:
                return record
        raise GraphError("was not lowered (no such node)", node)

    def summary(self) -> str:
        """One line per node: op, kernels, tile parameters, instruction count."""
        lines = [f"lowered {self.name} for {self.target}: {len(self.programs)} program(s), "
                 f"{self.instruction_count} instructions"
                 + (f", {self.partition} parallel over {self.cores} cores"
                    if self.partition else "")]
        width = max((len(r.node) for r in self.nodes), default=0)
        for r in self.nodes:
            what = (f"fused into {r.fused_into}" if r.fused_into
                    else ", ".join(r.kernels) or "(no instructions)")
            tiles = " ".join(f"{k}={v}" for k, v in r.layout)
            core = f"core {r.program} " if len(self.programs) > 1 else ""
            lines.append(f"  {r.node:<{width}}  {core}{r.op:<14} {r.instructions:>6} instr  "
                         f"{what}{'  [' + tiles + ']' if tiles else ''}"
                         f"{'  (' + r.note + ')' if r.note else ''}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return (f"LoweredModel({self.name}: {len(self.programs)} program(s), "
                f"{self.instruction_count} instructions)")

    def to_json(self) -> dict:
        return {
            "name": self.name, "target": self.target, "partition": self.partition,
            "cores": self.cores, "instructions": self.instruction_count,
            "programs": [{"name": p.name, "instructions": p.instruction_count,
                          "tensors": len(p.tensors)} for p in self.programs],
            "nodes": [{"node": r.node, "op": r.op, "program": r.program,
                       "kernels": list(r.kernels), "layout": dict(r.layout),
                       "instructions": r.instructions, "fused_into": r.fused_into,
                       "note": r.note,
                       "spans": [[s.stream, s.start, s.end] for s in r.spans]}
                      for r in self.nodes],
        }


def _shard_shape(shape: tuple[int, ...], axis: int, cores: int) -> tuple[int, ...]:
    return shape[:axis] + (shape[axis] // cores,) + shape[axis + 1:]


def _binding_value(binding: Binding, graph: Graph, inputs: Mapping[str, Any]) -> np.ndarray:
    """The array of one program input (in its storage dtype), on the host."""
    if binding.kind == "zeros":
        return np.zeros(binding.shape, binding.dtype.storage)
    if binding.kind == "input":
        return _graph_input(graph, binding.node, inputs)
    if binding.kind == "constant":
        value = cast(graph.constant_value(binding.node), binding.dtype)
        return np.transpose(value, binding.perm) if binding.perm else value
    # host_gather: np.take of the stored table by the ids, exactly the reference's gather
    table = cast(graph.constant_value(binding.source), graph.types(binding.source)[0].dtype)
    ids = _graph_input(graph, binding.node, inputs).astype(np.int64)
    rows = table.shape[binding.axis]
    if ids.size and (ids.min() < -rows or ids.max() >= rows):
        raise GraphError(f"gather: an index of input {binding.node!r} is outside "
                         f"-{rows}..{rows - 1}", binding.gather)
    return cast(np.take(table, ids, axis=binding.axis), binding.dtype)


def _graph_input(graph: Graph, name: str, inputs: Mapping[str, Any]) -> np.ndarray:
    t = graph.graph_inputs[name]
    value = np.asarray(inputs[name])
    if value.shape != t.shape:
        raise GraphError(f"input {name!r} has shape {value.shape}, the graph expects {t}")
    return cast(value, t.dtype)


# ---- the lowering of one program ----------------------------------------------------------------
Progress = Callable[[str], None]


def _ident(text: str) -> str:
    name = re.sub(r"\W", "_", text)
    return name if name and not name[0].isdigit() else f"t_{name}"


class _Program:
    """Lowers a list of nodes of `graph` into one traced program."""

    def __init__(self, graph: Graph, target: Target, name: str, index: int,
                 nodes: list[str], stage_of: dict[str, int] | None = None) -> None:
        self.graph = graph
        self.target = target
        self.index = index
        self.nodes = nodes
        self.stage_of = stage_of
        self.tracer = Tracer(_ident(name), target)
        self.values: dict[Value, NkiTensor] = {}
        self.bindings: list[Binding] = []
        self.records: list[NodeRecord] = []
        self.fused: dict[str, str] = {}  # node -> the node whose kernel computed it
        self.layout: dict[str, Any] = {}  # tile parameters of the node being lowered
        self.sends: dict[Value, list[tuple[int, int]]] = {}  # value -> (peer, tag)
        self.recvs: dict[Value, tuple[int, int]] = {}  # value -> (peer, tag)

    # ---- operands ---------------------------------------------------------------------------
    def type_of(self, value: Value) -> TensorType:
        return self.graph.type_of(value)

    def tensor(self, value: Value) -> NkiTensor:
        """The HBM tensor holding `value`: a parameter for inputs and weights (declared on
        first use), a received tensor for a value of another pipeline stage."""
        if value in self.values:
            return self.values[value]
        if value in self.recvs:
            peer, tag = self.recvs[value]
            t = self.type_of(value)
            dst = self.new_hbm(_shape(t), t.dtype, f"{value.node}_recv")
            ap = _flat2d(dst).lower(self.target)
            self.tracer.emit(Recv(dst=ap, peer=peer, tag=tag), self.tracer.dma_queue(),
                             f"recv of {value}")
            self.values[value] = dst
            return dst
        op = self.graph.op(value.node).op
        if op not in ("input", "constant"):
            raise LoweringError(f"({op}) is used before it was lowered", value.node)
        t = self.type_of(value)
        self.values[value] = self.parameter(value.node, "input" if op == "input" else "constant",
                                            _shape(t), t.dtype)
        return self.values[value]

    def unique(self, base: str) -> str:
        """An HBM tensor name of this program not used yet."""
        name, n = _ident(base), 1
        while name in self.tracer.hbm:
            name, n = f"{_ident(base)}_{n}", n + 1
        return name

    def parameter(self, node: str, kind: str, shape: tuple[int, ...], dt: DType,
                  name: str | None = None, **binding: Any) -> NkiTensor:
        name = self.unique(name or node)
        tensor = self.tracer.parameter(name, shape, dt)
        self.bindings.append(Binding(name, kind, node, shape, dt, **binding))
        return tensor

    def weight_relayout(self, value: Value, perm: tuple[int, ...]) -> NkiTensor:
        """A constant stored permuted by `perm` (prepared on the host at compile time)."""
        t = self.type_of(value)
        shape = tuple(_shape(t)[p] for p in perm)
        return self.parameter(value.node, "constant", shape, t.dtype,
                              name=f"{value.node}_{''.join(map(str, perm))}", perm=perm)

    def new_hbm(self, shape: tuple[int, ...], dt: DType, name: str) -> NkiTensor:
        return nl.ndarray(shape, dtype=dt, buffer=nl.shared_hbm, name=self.unique(name))

    def tiles(self, node: str) -> Any:
        layout = self.graph.annotations(node).get("layout")
        return None if layout is None else layout.tiles

    def sole_user(self, node: str) -> str | None:
        """The one node reading `node`'s single output, if it is no graph output."""
        value = Value(node)
        uses = self.graph.consumers(value)
        if len(uses) != 1 or self.graph.output_names(value) or len(self.graph.types(node)) != 1:
            return None
        user = uses[0][0]
        if self.stage_of is not None and self.stage_of.get(user) != self.stage_of.get(node):
            return None
        return user

    # ---- the node loop ----------------------------------------------------------------------
    def positions(self) -> dict[str, int]:
        return {name: len(instrs) for name, instrs in self.tracer.builder.streams.items()}

    def run(self, progress: Progress | None, done: list[int], total: int) -> None:
        with context.install(self.tracer):
            # Receive every value of earlier stages first, in the order they are sent: a recv
            # waits for its send, so receiving in another order could deadlock the queues.
            for value in sorted(self.recvs, key=lambda v: self.recvs[v][1]):
                before = self.positions()
                self.tensor(value)
                self.record(f"recv {value}", "recv", before, ("recv",),
                            f"from core {self.recvs[value][0]}")
            for node in self.nodes:
                self.lower_node(node)
                done[0] += 1
                if progress is not None and total and \
                        done[0] * 10 // total > (done[0] - 1) * 10 // total:
                    progress(f"lower: {100 * done[0] // total}% ({done[0]}/{total} nodes, "
                             f"{sum(self.positions().values())} instructions in "
                             f"{self.tracer.builder.name})")
            self.tracer.flush()

    def lower_node(self, node: str) -> None:
        op = self.graph.op(node).op
        if node in self.fused:
            self.records.append(NodeRecord(node, op, self.index, (), (), (), self.fused[node]))
            return
        before = self.positions()
        self.layout = {}
        lowering = LOWERINGS.get(op)
        if lowering is None:
            raise LoweringError(f"({op}) has no lowering; lowered ops: {', '.join(LOWERINGS)}",
                                node)
        try:
            outputs, kernels, note = lowering(self, node)
            self.tracer.flush()
        except LoweringError:
            raise
        except (NkiError, ValueError, MemoryError, IndexError) as err:
            raise LoweringError(f"({op}) {type(err).__name__}: {err}", node) from None
        for port, tensor in enumerate(outputs):
            self.values[Value(node, port)] = tensor
        for port in range(len(outputs)):
            for peer, tag in self.sends.get(Value(node, port), ()):
                src = _flat2d(self.values[Value(node, port)]).lower(self.target)
                self.tracer.emit(Send(src=src, peer=peer, tag=tag), self.tracer.dma_queue(),
                                 f"send of {node}")
        self.record(node, op, before, tuple(kernels), note)

    def record(self, node: str, op: str, before: dict[str, int], kernels: tuple[str, ...],
               note: str) -> None:
        """Record the instructions emitted since `before` as produced by `node`."""
        spans = tuple(Span(s, before.get(s, 0), end) for s, end in self.positions().items()
                      if end > before.get(s, 0))
        self.records.append(NodeRecord(node, op, self.index, kernels,
                                       tuple(self.layout.items()), spans, None, note))
        self.layout = {}

    def finish(self, outputs: list[tuple[str, Value]]) -> tuple[Program, list[OutputBinding]]:
        """Return the graph outputs this program computes; build the program."""
        returned, used, bindings = [], set(), []
        with context.install(self.tracer):
            for name, value in outputs:
                tensor = self.tensor(value)
                info = self.tracer.hbm.get(tensor.name)
                if (info is None or info.role != "shared" or not tensor.is_base
                        or tensor.name in used):
                    before = self.positions()
                    copy = self.new_hbm(tensor.shape, tensor.dt, name)
                    _copy(copy, tensor)
                    self.record(f"output {name}", "output", before, ("dma",),
                                f"copy of {value} into an output tensor of its own")
                    tensor = copy
                used.add(tensor.name)
                returned.append(tensor)
                bindings.append(OutputBinding(name, self.index, tensor.name,
                                              self.type_of(value).shape))
            self.tracer.flush()
        program, _, _ = self.tracer.finish(tuple(returned) if returned else None)
        return program, bindings


def _shape(t: TensorType) -> tuple[int, ...]:
    """Program tensors have at least one dimension: a scalar is [1]."""
    return t.shape or (1,)


def _dense(tensor: NkiTensor, shape: tuple[int, ...]) -> NkiTensor:
    """`tensor` (a dense HBM tensor) seen with another shape."""
    shape = shape or (1,)
    return tensor if tuple(tensor.shape) == tuple(shape) else tensor.reshape(shape)


def _flat2d(tensor: NkiTensor) -> NkiTensor:
    """A dense tensor as [rows, columns] with columns within the access-pattern limit."""
    size = tensor.size
    cols = tensor.shape[-1]
    if cols > MAX_AXIS_SIZE or size % cols:
        cols = next((c for c in range(MAX_AXIS_SIZE, 0, -1) if size % c == 0), 1)
    return tensor.reshape((size // cols, cols))


def _rows_cols(t: TensorType) -> tuple[int, int]:
    shape = _shape(t)
    return prod(shape[:-1]), shape[-1]


def _clamp(value: int | None, low: int, high: int) -> int:
    return max(low, min(high, value if value is not None else high))


# ---- data movement: HBM -> HBM copies ---------------------------------------------------------
def _view(tensor: NkiTensor, offset: int, axes: Sequence[tuple[int, int]]) -> NkiTensor:
    return NkiTensor(tensor.storage, View(offset, tuple(axes)), tensor.dt, False)


def _permuted(tensor: NkiTensor, perm: Sequence[int]) -> NkiTensor:
    axes = tensor.view.axes
    return _view(tensor, tensor.view.offset, [axes[p] for p in perm])


def _split_long(dims: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Axes longer than an access pattern takes, split in two where their size factors."""
    out = []
    for size, ds, ss in dims:
        inner = next((b for b in range(MAX_AXIS_SIZE, 1, -1) if size % b == 0), None) \
            if size > MAX_AXIS_SIZE else None
        if inner is None:
            out.append((size, ds, ss))
        else:
            out += [(size // inner, ds * inner, ss * inner), (inner, ds, ss)]
    return out


def _copy(dst: NkiTensor, src: NkiTensor) -> int:
    """dst = src for two HBM views of one shape, by as few DMAs as the access-pattern limits
    allow (the largest outer axis is the DMA's row axis, which spreads it over the DMA engines);
    returns the number of DMAs."""
    if tuple(dst.shape) != tuple(src.shape):
        raise ValueError(f"copy of {src.shape} into {dst.shape}")
    dims: list[tuple[int, int, int]] = []  # (size, dst stride, src stride), outer first
    for (ds, size), (ss, _) in zip(dst.view.axes, src.view.axes):
        if size == 1:
            continue
        if dims and dims[-1][1] == ds * size and dims[-1][2] == ss * size:
            dims[-1] = (dims[-1][0] * size, ds, ss)  # contiguous in both: one axis
        else:
            dims.append((size, ds, ss))
    if not dims:
        dims = [(1, 1, 1)]
    if len(dims) == 1:  # one run: rows of at most 128 so the copy uses every DMA engine
        size, ds, ss = dims[0]
        rows = next((r for r in range(min(P_MAX, size), 0, -1)
                     if size % r == 0 and size // r <= MAX_AXIS_SIZE), 1)
        dims = [(rows, size // rows * ds, size // rows * ss), (size // rows, ds, ss)]
    dims = _split_long(dims)
    outer = [k for k in range(len(dims) - 1) if dims[k][1] >= 0 and dims[k][2] >= 0]
    row = max(outer, key=lambda k: dims[k][0]) if outer else None
    rest = [d for k, d in enumerate(dims) if k != row]

    def legal(d: tuple[int, int, int]) -> bool:
        return d[0] <= MAX_AXIS_SIZE and abs(d[1]) <= MAX_AXIS_STRIDE \
            and abs(d[2]) <= MAX_AXIS_STRIDE

    loops = [d for d in rest if not legal(d)]
    free = [d for d in rest if legal(d)]
    while len(free) > 4:
        loops.append(free.pop(0))
    count = prod(d[0] for d in loops)
    if count > MAX_COPY_DMAS:
        raise ValueError(f"copying {src.shape} needs {count} DMAs (axes {dims}); more than "
                         f"{MAX_COPY_DMAS}")
    row_dim = dims[row] if row is not None else (1, 0, 0)
    for index in np.ndindex(*(d[0] for d in loops)) if loops else [()]:
        d_off = dst.view.offset + sum(i * d[1] for i, d in zip(index, loops))
        s_off = src.view.offset + sum(i * d[2] for i, d in zip(index, loops))
        d_axes = [(row_dim[1], row_dim[0])] + [(d[1], d[0]) for d in free]
        s_axes = [(row_dim[2], row_dim[0])] + [(d[2], d[0]) for d in free]
        if not free:
            d_axes.append((1, 1))
            s_axes.append((1, 1))
        nisa.dma_copy(dst=_view(dst, d_off, d_axes), src=_view(src, s_off, s_axes))
    return max(count, 1)


# ---- per-op lowerings ---------------------------------------------------------------------------
Lowered = tuple[tuple[NkiTensor, ...], tuple[str, ...], str]


def _gemm_tiles(L: _Program, node: str, m: int, k: int, n: int) -> tuple[int, int, int]:
    tiles = L.tiles(node)
    tm = _clamp(getattr(tiles, "tile_m", None), 1, min(m, P_MAX))
    tk = _clamp(getattr(tiles, "tile_k", None), 1, min(k, P_MAX))
    tn = _clamp(getattr(tiles, "tile_n", None), 1, min(n, 512))
    return tm, tk, tn


def _fit_hoisted(target: Target, k: int, tm: int, tk: int, tn: int,
                 itemsize: int) -> tuple[int, int, int]:
    """Tiles whose hoisted operand columns (matmul_hoisted keeps every K tile of a TILE_M and
    a TILE_N column block, double buffered) fit the target's SBUF partition: TILE_N, then
    TILE_M halved as needed (NeuronCore-v1 has 80 KiB per partition, v2 192 KiB)."""
    def need(m: int, n: int) -> int:
        return 2 * -(-k // tk) * (m + n) * itemsize
    while need(tm, tn) > target.sbuf_partition_bytes and tn > 64:
        tn //= 2
    while need(tm, tn) > target.sbuf_partition_bytes and tm > 32:
        tm //= 2
    return tm, tk, tn


def _linear_2d(L: _Program, node: str, x2: NkiTensor, w: NkiTensor, bias: NkiTensor | None,
               activation: str) -> NkiTensor:
    """activation(x2 [T, K] @ w [K, N] + bias): a TensorE transpose of x, then matmul_hoisted
    with its epilogue."""
    T, K = x2.shape
    N = w.shape[1]
    tm, tk, tn = _fit_hoisted(L.target, K, *_gemm_tiles(L, node, T, K, N),
                              x2.dt.itemsize)
    L.layout.update(TILE_M=tm, TILE_K=tk, TILE_N=tn)
    bands = _clamp(-(-T // P_MAX), 1, 4)
    xT = transpose_kernels.transpose(x2, BANDS_PER_STORE=bands)
    return matmul.matmul_hoisted(xT, w, TILE_M=tm, TILE_K=tk, TILE_N=tn, bias=bias,
                                 activation=EPILOGUE[activation])


def _lower_linear(L: _Program, node: str) -> Lowered:
    op = L.graph.op(node)
    x, w, *bias = L.graph.inputs(node)
    T, K = _rows_cols(L.type_of(x))
    activation = op.activation if op.op == "linear" else "none"
    out = _linear_2d(L, node, _dense(L.tensor(x), (T, K)), L.tensor(w),
                     L.tensor(bias[0]) if bias else None, activation)
    epilogue = [k for k, on in (("bias", bias), (activation, activation != "none")) if on]
    return ((_dense(out, _shape(L.graph.types(node)[0])),), ("transpose", "matmul_hoisted"),
            f"epilogue {'+'.join(epilogue)}" if epilogue else "")


def _lower_batch_matmul(L: _Program, node: str) -> Lowered:
    a, b = L.graph.inputs(node)
    ta, tb, to = L.type_of(a), L.type_of(b), L.graph.types(node)[0]
    at, bt = L.tensor(a), L.tensor(b)
    batch = to.shape[:-2]
    out = L.new_hbm(to.shape, to.dtype, node)
    for index in np.ndindex(*batch) if batch else [()]:
        a_index = _broadcast_index(index, ta.shape[:-2])
        b_index = _broadcast_index(index, tb.shape[:-2])
        a_view = at[a_index] if a_index else at
        b_view = bt[b_index] if b_index else bt
        if L.graph.op(node).transpose_b:
            b_view = _permuted(b_view, (1, 0))
        product = _linear_2d(L, node, a_view, b_view, None, "none")
        _copy(out[index] if index else out, product)
    return (out,), ("transpose", "matmul_hoisted"), f"{prod(batch)} GEMMs"


def _broadcast_index(index: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index into an operand with batch dims `shape` of broadcast batch `index`."""
    tail = index[len(index) - len(shape):] if shape else ()
    return tuple(i if n > 1 else 0 for i, n in zip(tail, shape))


def _lower_conv2d(L: _Program, node: str) -> Lowered:
    op = L.graph.op(node)
    x, w, *bias = L.graph.inputs(node)
    if op.groups != 1 or op.dilation != (1, 1) or op.stride[0] != op.stride[1]:
        raise LoweringError(f"(conv2d) groups={op.groups}, dilation={op.dilation} and stride="
                            f"{op.stride}: the library conv2d takes groups 1, dilation 1 and "
                            f"one stride for both axes", node)
    w_out, o = L.graph.types(node)[0].shape[3], L.type_of(w).shape[0]
    tiles = L.tiles(node)
    tile_n = _clamp(getattr(tiles, "tile_n", None), 1, 512)
    if tile_n < w_out:
        raise LoweringError(f"(conv2d) tile_n={tile_n} is smaller than an output row "
                            f"(W_out={w_out}); the library conv2d covers whole rows", node)
    tile_m = _clamp(getattr(tiles, "tile_m", None), 1, min(o, P_MAX))
    activation, absorbed = "none", None
    user = L.sole_user(node)
    if user is not None and L.graph.op(user).op in CONV_ABSORBS:
        activation, absorbed = CONV_ABSORBS[L.graph.op(user).op], user
    if L.graph.is_constant(w):
        weights, layout = L.weight_relayout(w, (1, 2, 3, 0)), "IHWO"
    else:
        weights, layout = L.tensor(w), "OIHW"
    L.layout.update(TILE_N=tile_n, TILE_M=tile_m, WEIGHTS=layout)
    out = conv_kernels.conv2d(L.tensor(x), weights, stride=op.stride[0], padding=op.padding,
                              TILE_N=tile_n, bias=L.tensor(bias[0]) if bias else None,
                              activation=activation, TILE_M=tile_m, WEIGHTS=layout)
    if absorbed is not None:
        L.fused[absorbed] = node
        L.values[Value(absorbed)] = out
    epilogue = [k for k, on in (("bias", bias), (activation, absorbed)) if on]
    return (out,), ("conv2d",), f"epilogue {'+'.join(epilogue)}" if epilogue else ""


def _pool_params(node: str, op: Any) -> tuple[int, int, int]:
    (kh, kw), (sh, sw) = op.kernel, op.stride
    pads = set(op.padding)
    if kh != kw or sh != sw or len(pads) != 1:
        raise LoweringError(f"({op.op}) kernel {op.kernel}, stride {op.stride}, padding "
                            f"{op.padding}: the library pools take square windows, one stride "
                            f"and the same padding on every side", node)
    return kh, sh, pads.pop()


def _pool_reduce(kernel: int, stride: int) -> str:
    # Separable reduction wins when windows overlap (see tests/library/test_layouts.py).
    return "separable" if kernel > stride else "window"


def _lower_maxpool(L: _Program, node: str) -> Lowered:
    op = L.graph.op(node)
    kernel, stride, padding = _pool_params(node, op)
    reduce = _pool_reduce(kernel, stride)
    L.layout.update(REDUCE=reduce)
    out = conv_kernels.maxpool(L.tensor(L.graph.inputs(node)[0]), kernel_size=kernel,
                               stride=stride, REDUCE=reduce, padding=padding)
    return (out,), ("maxpool",), ""


def _lower_avgpool(L: _Program, node: str) -> Lowered:
    op = L.graph.op(node)
    kernel, stride, padding = _pool_params(node, op)
    if padding and not op.count_include_pad:
        raise LoweringError("(avgpool2d) padding with count_include_pad=False: the library "
                            "avgpool counts padding in the window", node)
    reduce = _pool_reduce(kernel, stride)
    L.layout.update(REDUCE=reduce)
    out = conv_kernels.avgpool(L.tensor(L.graph.inputs(node)[0]), kernel_size=kernel,
                               stride=stride, REDUCE=reduce, padding=padding)
    return (out,), ("avgpool",), ""


def _lower_global_avgpool(L: _Program, node: str) -> Lowered:
    (x,) = L.graph.inputs(node)
    _, _, h, w = L.type_of(x).shape
    if h != w:
        raise LoweringError(f"(global_avgpool) a {h}x{w} plane: the library avgpool takes "
                            f"square windows", node)
    out = conv_kernels.avgpool(L.tensor(x), kernel_size=h, stride=h, REDUCE="window")
    return (out,), ("avgpool",), f"one {h}x{w} window"


def _fold(rows: int) -> int:
    """How many consecutive rows of [rows, C] an element-wise op folds into one partition row
    ([rows / g, C * g], the same bytes): as many as leave at least 128 rows."""
    if rows < 2 * P_MAX:
        return 1
    return next(g for g in range(rows // P_MAX, 0, -1) if rows % g == 0)


def _f_tile(L: _Program, node: str, cols: int, fold: int = 1) -> int:
    """F_TILE of the element-wise kernels: the layout's tile_free (elements of one row of the
    [rows, last axis] view per tile) times the rows folded into a partition, at most what
    leaves half of SBUF to others (three operands, double buffered)."""
    dt = L.graph.types(node)[0].dtype
    cap = L.target.sbuf_partition_bytes // (12 * dt.itemsize)
    tile_free = _clamp(getattr(L.tiles(node), "tile_free", None), 1, cols // fold)
    f_tile = _clamp(tile_free * fold, 1, min(cols, max(cap, tile_free)))
    L.layout.update(F_TILE=f_tile)
    return f_tile


def _binary_views(L: _Program, node: str, a: Value, b: Value
                  ) -> tuple[NkiTensor, NkiTensor, int, int, str]:
    """2-D views of the operands over the output seen as [rows, last axis]: each full, a row
    [1, C] (a vector over the last axis), a column [R, 1] or a scalar [1, 1], the library
    kernel's broadcasts.  An operand broadcast any other way (e.g. [S, H] over [B, S, H]) is
    first expanded to the output's shape by one DMA whose access pattern repeats it (stride
    0), so the element-wise work still uses every partition.  When no operand is a row or a
    column, rows are folded (`_fold`) into longer partition rows."""
    out = L.graph.types(node)[0].shape or (1,)
    rows, cols = prod(out[:-1]), out[-1]
    kinds, tensors, notes = [], [], []
    for v in (a, b):
        s = L.type_of(v).shape
        s = (1,) * (len(out) - len(s)) + s
        tensor = L.tensor(v)
        if s == out:
            kind = "full"
        elif all(d == 1 for d in s):
            kind = "scalar"
        elif all(d == 1 for d in s[:-1]) and s[-1] == cols:
            kind = "row"
        elif s[:-1] == out[:-1] and s[-1] == 1:
            kind = "column"
        else:
            padded = _dense(tensor, s)
            axes = [(0 if n == 1 else stride, size)
                    for (stride, n), size in zip(padded.view.axes, out)]
            tensor = L.new_hbm(out, L.type_of(v).dtype, f"{node}_{v.node}_broadcast")
            _copy(tensor, _view(padded, padded.view.offset, axes))
            kind = "full"
            notes.append(f"{v} broadcast to {list(out)} by DMA")
        kinds.append(kind)
        tensors.append(tensor)
    fold = _fold(rows) if set(kinds) <= {"full", "scalar"} else 1
    rows, cols = rows // fold, cols * fold
    shapes = {"full": (rows, cols), "scalar": (1, 1), "row": (1, cols), "column": (rows, 1)}
    views = [_dense(t, shapes[k]) for t, k in zip(tensors, kinds)]
    return views[0], views[1], cols, fold, "; ".join(notes)


def _lower_binary(L: _Program, node: str) -> Lowered:
    a, b = L.graph.inputs(node)
    x, y, cols, fold, note = _binary_views(L, node, a, b)
    name = BINARY_KERNEL_OPS[L.graph.op(node).op]
    out = elementwise.binary(x, y, op=name, F_TILE=_f_tile(L, node, cols, fold))
    return (_dense(out, _shape(L.graph.types(node)[0])),), (name,), note


def _lower_unary(L: _Program, node: str) -> Lowered:
    op = L.graph.op(node)
    (x,) = L.graph.inputs(node)
    rows, cols = _rows_cols(L.type_of(x))
    fold = _fold(rows)
    name = UNARY_KERNEL_OPS.get(op.op)
    if op.op == "gelu":
        name = "gelu" if op.approximate == "none" else "gelu_apprx_tanh"
    if name is None:
        raise LoweringError(f"({op.op}) has no Scalar-engine activation function (the ISA's "
                            f"functions: exp, tanh, sigmoid, relu, gelu, silu, ...)", node)
    out = elementwise.unary(_dense(L.tensor(x), (rows // fold, cols * fold)), op=name,
                            F_TILE=_f_tile(L, node, cols * fold, fold))
    return (_dense(out, _shape(L.graph.types(node)[0])),), (name,), ""


def _lower_softmax(L: _Program, node: str) -> Lowered:
    op = L.graph.op(node)
    (x,) = L.graph.inputs(node)
    t = L.type_of(x)
    if op.axis % max(t.ndim, 1) != t.ndim - 1:
        raise LoweringError(f"(softmax) axis {op.axis} of {t}: the library softmax reduces the "
                            f"last axis", node)
    out = softmax.softmax(_dense(L.tensor(x), _rows_cols(t)))
    return (_dense(out, t.shape),), ("softmax",), ""


def _norm_params(L: _Program, node: str, params: Sequence[Value], cols: int,
                 beta: bool) -> list[NkiTensor]:
    tensors = [L.tensor(p) for p in params]
    if beta and len(tensors) == 1:  # no shift: a zero beta
        dt = L.type_of(params[0]).dtype
        tensors.append(L.parameter(f"{node}.beta_zeros", "zeros", (cols,), dt))
    return tensors


def _lower_layernorm(L: _Program, node: str) -> Lowered:
    op = L.graph.op(node)
    x, *params = L.graph.inputs(node)
    t = L.type_of(x)
    rows, cols = _rows_cols(t)
    x2 = _dense(L.tensor(x), (rows, cols))
    if op.op == "rmsnorm":
        out = norms.rmsnorm(x2, L.tensor(params[0]), eps=op.eps)
        return (_dense(out, t.shape),), ("rmsnorm",), ""
    gamma, beta = _norm_params(L, node, params, cols, True)
    out = norms.layernorm(x2, gamma, beta, eps=op.eps)
    return (_dense(out, t.shape),), ("layernorm",), ""


def _lower_add_layernorm(L: _Program, node: str) -> Lowered:
    op = L.graph.op(node)
    a, b, *params = L.graph.inputs(node)
    t = L.type_of(a)
    rows, cols = _rows_cols(t)
    fold = _fold(rows)
    flat = (rows // fold, cols * fold)
    total = elementwise.binary(_dense(L.tensor(a), flat), _dense(L.tensor(b), flat), op="add",
                               F_TILE=_f_tile(L, node, cols * fold, fold))
    gamma, beta = _norm_params(L, node, params, cols, True)
    out = norms.layernorm(_dense(total, (rows, cols)), gamma, beta, eps=op.eps)
    return ((_dense(out, t.shape), _dense(total, t.shape)), ("add", "layernorm"),
            "residual sum stored as output 1")


def _as4d(tensor: NkiTensor, t: TensorType) -> NkiTensor:
    """[..., S, D] as [B, H, S, D]: leading dims padded with 1s or folded into B."""
    shape = t.shape
    if len(shape) > 4:
        shape = (prod(shape[:-3]),) + shape[-3:]
    return _dense(tensor, (1,) * (4 - len(shape)) + tuple(shape))


def _lower_attention(L: _Program, node: str) -> Lowered:
    op = L.graph.op(node)
    q, k, v, *mask = L.graph.inputs(node)
    tq, tk, tv = (L.type_of(x) for x in (q, k, v))
    sq, sk = tq.shape[-2], tk.shape[-2]
    if tk.shape != tv.shape:
        raise LoweringError(f"(attention) k {tk} and v {tv} differ: the library attention "
                            f"takes one head size for keys and values", node)
    causal = op.causal and sq > 1
    if causal and sq != sk:
        raise LoweringError(f"(attention) causal with {sq} queries and {sk} keys: the library "
                            f"attention masks causally only when they are equal (or one query)",
                            node)
    tiles = L.tiles(node)
    q_tile = _clamp(getattr(tiles, "tile_q", None), 1, min(sq, P_MAX))
    kv_tile = _clamp(getattr(tiles, "tile_kv", None), P_MAX, 512) // P_MAX * P_MAX
    L.layout.update(Q_TILE=q_tile, KV_TILE=kv_tile)
    mask_tensor = None
    if mask:
        tm = L.type_of(mask[0])
        if tq.ndim > 4 and any(d != 1 for d in tm.shape[:-3]):
            raise LoweringError(f"(attention) mask {tm} with batch dims on {tq}", node)
        shape = tm.shape[-4:] if tm.ndim >= 4 else (1,) * (4 - tm.ndim) + tm.shape
        mask_tensor = _dense(L.tensor(mask[0]), shape)
    out = attention_kernels.attention(
        _as4d(L.tensor(q), tq), _as4d(L.tensor(k), tk), _as4d(L.tensor(v), tv), causal=causal,
        softmax_scale=op.scale, KV_TILE=kv_tile, mask=mask_tensor, Q_TILE=q_tile)
    return (_dense(out, L.graph.types(node)[0].shape),), ("attention",), \
        "additive mask" if mask else ""


def _lower_reshape(L: _Program, node: str) -> Lowered:
    (x,) = L.graph.inputs(node)
    return (_dense(L.tensor(x), _shape(L.graph.types(node)[0])),), (), "a view: no data moved"


def _lower_transpose(L: _Program, node: str) -> Lowered:
    (x,) = L.graph.inputs(node)
    t = L.graph.types(node)[0]
    out = L.new_hbm(_shape(t), t.dtype, node)
    dmas = _copy(out, _permuted(L.tensor(x), L.graph.op(node).perm))
    return (out,), ("dma",), f"{dmas} DMA(s)"


def _lower_concat(L: _Program, node: str) -> Lowered:
    t = L.graph.types(node)[0]
    axis = L.graph.op(node).axis % t.ndim
    out = L.new_hbm(t.shape, t.dtype, node)
    start, dmas = 0, 0
    for x in L.graph.inputs(node):
        size = L.type_of(x).shape[axis]
        index = (slice(None),) * axis + (slice(start, start + size),)
        dmas += _copy(out[index], L.tensor(x))
        start += size
    return (out,), ("dma",), f"{dmas} DMA(s)"


def _lower_split(L: _Program, node: str) -> Lowered:
    (x,) = L.graph.inputs(node)
    types = L.graph.types(node)
    axis = L.graph.op(node).axis % types[0].ndim
    source = L.tensor(x)
    outs, start, dmas = [], 0, 0
    for port, t in enumerate(types):
        out = L.new_hbm(t.shape, t.dtype, f"{node}_{port}")
        index = (slice(None),) * axis + (slice(start, start + t.shape[axis]),)
        dmas += _copy(out, source[index])
        start += t.shape[axis]
        outs.append(out)
    return tuple(outs), ("dma",), f"{dmas} DMA(s)"


def _lower_slice(L: _Program, node: str) -> Lowered:
    (x,) = L.graph.inputs(node)
    t = L.graph.types(node)[0]
    source = L.tensor(x)
    bounds = slice_bounds(L.graph.op(node), L.type_of(x).shape)
    axes, offset = [], source.view.offset
    for (stride, dim), s, size in zip(source.view.axes, bounds, t.shape):
        start, _, step = s.indices(dim)
        offset += start * stride
        axes.append((stride * step, size))
    out = L.new_hbm(t.shape, t.dtype, node)
    dmas = _copy(out, _view(source, offset, axes))
    return (out,), ("dma",), f"{dmas} DMA(s)"


def _lower_gather(L: _Program, node: str) -> Lowered:
    data, indices = L.graph.inputs(node)
    axis = L.graph.op(node).axis % L.type_of(data).ndim
    t = L.graph.types(node)[0]
    g = L.graph
    if g.is_constant(indices):
        # Static indices: one DMA per index from the data tensor.
        ids = g.constant_value(indices.node).astype(np.int64).reshape(-1)
        source, n = L.tensor(data), L.type_of(data).shape[axis]
        out = L.new_hbm(t.shape, t.dtype, node)
        lead, tail = t.shape[:axis], t.shape[axis + len(L.type_of(indices).shape):]
        flat = _dense(out, lead + (len(ids),) + tail)
        for j, i in enumerate(ids):
            if not -n <= i < n:
                raise LoweringError(f"(gather) index {i} is outside -{n}..{n - 1}", node)
            index = (slice(None),) * axis
            _copy(flat[index + (j,)], source[index + (int(i % n),)])
        return (out,), ("dma",), f"{len(ids)} DMA(s), static indices"
    if g.is_constant(data) and g.op(indices.node).op == "input":
        shard = g.annotations(node).get("partition")
        split = shard.axes[0] if isinstance(shard, DataShard) else None
        tensor = L.parameter(indices.node, "host_gather", _shape(t), t.dtype, name=node,
                             source=data.node, gather=node, axis=axis, split_axis=split)
        return (tensor,), (), f"rows of {data.node} picked on the host by {indices.node}"
    raise LoweringError(f"(gather) indices {indices.node} are computed on the device; only "
                        f"constant indices (DMA) and graph-input ids into a constant table "
                        f"(host-side lookup) are lowered: the ISA has no indirect DMA", node)


def _lower_all_reduce(L: _Program, node: str) -> Lowered:
    """The ISA AllReduce (sum) from the operand's HBM tensor into a new one, over the cores
    in the graph's `meta["collective_ranks"]` (default 0..group_size-1: see `sharding`)."""
    (x,) = L.graph.inputs(node)
    group = L.graph.op(node).group_size
    ranks = tuple(L.graph.meta.get("collective_ranks") or range(group))
    if len(ranks) != group:
        raise LoweringError(f"(all_reduce) group_size={group} but the graph's collective_ranks "
                            f"are {ranks}", node)
    t = L.graph.types(node)[0]
    out = L.new_hbm(_shape(t), t.dtype, node)
    if group == 1:
        _copy(out, L.tensor(x))
        return (out,), ("dma",), "group of one: a copy"
    nisa.all_reduce(dst=_flat2d(out), src=_flat2d(_dense(L.tensor(x), _shape(t))), ranks=ranks)
    return (out,), ("all_reduce",), f"ring all-reduce over cores {list(ranks)}"


def _lower_block_collective(L: _Program, node: str) -> Lowered:
    """all_gather / reduce_scatter along axis 0, where every rank's block is one contiguous
    run of the row-major tensor: the ISA AllGather / ReduceScatter over the graph's ranks."""
    (x,) = L.graph.inputs(node)
    op = L.graph.op(node)
    if op.axis != 0:
        raise LoweringError(f"({op.op}) axis={op.axis}: only axis 0, whose blocks are "
                            f"contiguous in HBM, is lowered", node)
    ranks = tuple(L.graph.meta.get("collective_ranks") or range(op.group_size))
    if len(ranks) != op.group_size:
        raise LoweringError(f"({op.op}) group_size={op.group_size} but the graph's "
                            f"collective_ranks are {ranks}", node)
    t, given = L.graph.types(node)[0], L.graph.type_of(x)
    out = L.new_hbm(_shape(t), t.dtype, node)
    src = _flat2d(_dense(L.tensor(x), _shape(given)))
    if op.op == "all_gather":
        nisa.all_gather(dst=_flat2d(out), src=src, ranks=ranks)
    else:
        nisa.reduce_scatter(dst=_flat2d(out), src=src, ranks=ranks)
    return (out,), (op.op,), f"ring {op.op.replace('_', '-')} over cores {list(ranks)}"


def _unsupported(why: str) -> Callable[[_Program, str], Lowered]:
    def lowering(L: _Program, node: str) -> Lowered:
        raise LoweringError(f"({L.graph.op(node).op}) {why}", node)
    return lowering


LOWERINGS: dict[str, Callable[[_Program, str], Lowered]] = {
    "matmul": _lower_linear,
    "linear": _lower_linear,
    "batch_matmul": _lower_batch_matmul,
    "conv2d": _lower_conv2d,
    "attention": _lower_attention,
    "maxpool2d": _lower_maxpool,
    "avgpool2d": _lower_avgpool,
    "global_avgpool": _lower_global_avgpool,
    **{op: _lower_binary for op in BINARY_KERNEL_OPS},
    **{op: _lower_unary for op in ("relu", "gelu", "silu", "tanh", "sigmoid", "exp")},
    "erf": _unsupported("has no Scalar-engine function in the ISA (use gelu)"),
    "softmax": _lower_softmax,
    "layernorm": _lower_layernorm,
    "rmsnorm": _lower_layernorm,
    "add_layernorm": _lower_add_layernorm,
    "reshape": _lower_reshape,
    "transpose": _lower_transpose,
    "concat": _lower_concat,
    "split": _lower_split,
    "slice": _lower_slice,
    "gather": _lower_gather,
    "all_reduce": _lower_all_reduce,
    "all_gather": _lower_block_collective,
    "reduce_scatter": _lower_block_collective,
}


# ---- whole graphs -------------------------------------------------------------------------------
def _compute_nodes(graph: Graph) -> list[str]:
    return [n for n in graph.nodes if OPS[graph.op(n).op].reference is not None]


def lower(graph: Graph, target: Target | str = "inf2", *,
          progress: Progress | None = None) -> LoweredModel:
    """Lower a compiled graph (the compiler's `lower` pass callable): one program for a single
    core or a data-parallel shard, one per stage for a pipeline.  `progress` receives a line
    per 10% of nodes lowered."""
    target = resolve_target(target)
    plan = graph.meta.get("partition")
    if isinstance(plan, PipelinePlan):
        return _lower_pipeline(graph, target, plan, progress)
    shards = {a for n in graph.nodes
              if isinstance(a := graph.annotations(n).get("partition"), DataShard)}
    if shards:
        return _lower_data(graph, target, next(iter(shards)).cores, progress)
    nodes = _compute_nodes(graph)
    lowering = _Program(graph, target, graph.name, 0, nodes)
    lowering.run(progress, [0], len(nodes))
    program, outputs = lowering.finish(list(graph.outputs.items()))
    return LoweredModel(graph.name, target.name, None, 1, (program,), (tuple(lowering.bindings),),
                        tuple(outputs), tuple(lowering.records))


def _lower_data(graph: Graph, target: Target, cores: int,
                progress: Progress | None) -> LoweredModel:
    """One program for the per-core shard: batch inputs' split axis divided by `cores`."""
    shard = graph
    for name, t in graph.graph_inputs.items():
        axis = graph.annotations(name)["partition"].axes[0]
        if axis is not None:
            shape = t.shape[:axis] + (t.shape[axis] // cores,) + t.shape[axis + 1:]
            shard = shard.with_input(name, shape)
    shard = infer_types(shard)
    nodes = _compute_nodes(shard)
    lowering = _Program(shard, target, graph.name, 0, nodes)
    lowering.run(progress, [0], len(nodes))
    program, outputs = lowering.finish(list(shard.outputs.items()))
    # Each core's feed is its slice of the whole input along `split_axis`, in the shard's shape.
    feeds = []
    for b in lowering.bindings:
        axis = b.split_axis
        if b.kind == "input":
            axis = graph.annotations(b.node)["partition"].axes[0]
        feeds.append(Binding(b.tensor, b.kind, b.node, b.shape, b.dtype, b.perm, b.source,
                             b.gather, b.axis, axis))
    whole_outputs = []
    for out in outputs:
        value = graph.outputs[out.name]
        axis = graph.annotations(value.node)["partition"].axes[value.port]
        whole_outputs.append(OutputBinding(out.name, 0, out.tensor, graph.type_of(value).shape,
                                           axis))
    return LoweredModel(graph.name, target.name, "data", cores, (program,), (tuple(feeds),),
                        tuple(whole_outputs), tuple(lowering.records))


def _lower_pipeline(graph: Graph, target: Target, plan: PipelinePlan,
                    progress: Progress | None) -> LoweredModel:
    """One program per stage; a value crossing stages is sent by its producer's core and
    received by every later stage that reads it."""
    stages = len(plan.stage_flops)
    nodes = _compute_nodes(graph)
    stage_of = {n: graph.annotations(n)["partition"].stage for n in nodes}
    lowerings = [_Program(graph, target, f"{graph.name}_stage{s}", s,
                          [n for n in nodes if stage_of[n] == s], stage_of)
                 for s in range(stages)]
    transfers, tag = [], 0
    for node in nodes:
        for port in range(len(graph.types(node))):
            value = Value(node, port)
            readers = sorted({stage_of[v] for v, _ in graph.consumers(value)} - {stage_of[node]})
            for s in readers:
                lowerings[stage_of[node]].sends.setdefault(value, []).append((s, tag))
                lowerings[s].recvs[value] = (stage_of[node], tag)
                transfers.append(StageTransfer(str(value), stage_of[node], s, tag,
                                               graph.type_of(value).nbytes))
                tag += 1
    done = [0]
    for lowering in lowerings:
        lowering.run(progress, done, len(nodes))
    programs, inputs, outputs, records = [], [], [], []
    for s, lowering in enumerate(lowerings):
        mine = [(name, v) for name, v in graph.outputs.items()
                if stage_of.get(v.node, _source_stage(graph, v.node)) == s]
        program, bindings = lowering.finish(mine)
        programs.append(program)
        inputs.append(tuple(lowering.bindings))
        outputs += bindings
        records += lowering.records
    order = {n: i for i, n in enumerate(nodes)}
    records.sort(key=lambda r: order.get(r.node, -1 if r.op == "recv" else len(order)))
    return LoweredModel(graph.name, target.name, "pipeline", stages, tuple(programs),
                        tuple(inputs), tuple(outputs), tuple(records), tuple(transfers))


def _source_stage(graph: Graph, node: str) -> int:
    ann = graph.annotations(node).get("partition")
    return ann.stage if isinstance(ann, PipelineStage) else 0


@dataclass
class Lowering:
    """A `lowering` callable for `compile` with options: `Lowering(progress=print)`."""

    progress: Progress | None = field(default=None)

    def __call__(self, graph: Graph, target: Target) -> LoweredModel:
        return lower(graph, target, progress=self.progress)
