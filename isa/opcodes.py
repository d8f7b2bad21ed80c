"""The opcode table: the single place that lists every opcode.

For each opcode: its instruction record, the engines that may run it (the first is the default),
each operand's role and the memory spaces it may live in, its semantics function and its cost
function.  The assembler, the executor, the timing model, the docs and the coverage tests all
read this table.  Cost functions are attached by the timing model (`emulator.costs`) through
`OpSpec.cost`, which holds the name of the formula it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from isa import instructions as ins
from isa import semantics as sem
from isa.target import ENGINE_READS, ENGINE_WRITES, Engine, Space

ON_CHIP = frozenset({Space.SBUF, Space.PSUM})
SBUF_ONLY = frozenset({Space.SBUF})
PSUM_ONLY = frozenset({Space.PSUM})
ANY_SPACE = frozenset({Space.HBM, Space.SBUF, Space.PSUM})
OFF_PSUM = frozenset({Space.HBM, Space.SBUF})


@dataclass(frozen=True)
class Operand:
    """One access-pattern field of a record: read (`in`) or written (`out`), and where."""

    role: str
    spaces: frozenset[Space]

    def __post_init__(self) -> None:
        if self.role not in ("in", "out"):
            raise ValueError(f"operand role {self.role!r} must be 'in' or 'out'")


@dataclass(frozen=True)
class OpSpec:
    """Everything the project knows about one opcode."""

    name: str
    record: type[ins.Instruction]
    engines: tuple[Engine, ...]
    operands: dict[str, Operand]
    semantics: Callable[..., dict]
    cost: str  # name of the timing formula in emulator.costs (the timing model's table)
    summary: str = field(default="")
    collective: bool = False  # runs across cores: semantics take the whole group at once

    def role(self, operand: str) -> str:
        return self.operands[operand].role

    def spaces(self, operand: str, engine: Engine) -> frozenset[Space]:
        """Spaces `operand` may use on `engine`: the opcode's rule and the engine's ports."""
        spec = self.operands[operand]
        ports = ENGINE_WRITES[engine] if spec.role == "out" else ENGINE_READS[engine]
        return spec.spaces & ports


def _op(record, engines, operands, semantics, cost, summary, collective=False) -> OpSpec:
    return OpSpec(record.opcode, record, tuple(engines),
                  {name: Operand(role, spaces) for name, (role, spaces) in operands.items()},
                  semantics, cost, summary, collective)


_T, _V, _S, _G, _SY, _D = (Engine.TENSOR, Engine.VECTOR, Engine.SCALAR, Engine.GPSIMD,
                           Engine.SYNC, Engine.DMA)
_ALL_ENGINES = (_SY, _T, _V, _S, _G, _D)
_OUT, _IN = "out", "in"
_PER_PARTITION = (_IN, ON_CHIP)

OPCODES: dict[str, OpSpec] = {spec.name: spec for spec in (
    _op(ins.Wait, _ALL_ENGINES, {}, sem.no_values, "sync",
        "block the stream until a semaphore reaches a count"),
    _op(ins.Signal, _ALL_ENGINES, {}, sem.no_values, "sync",
        "increment a semaphore when the stream's earlier instructions complete"),
    _op(ins.DmaCopy, (_D,), {"dst": (_OUT, ANY_SPACE), "src": (_IN, ANY_SPACE)},
        sem.dma_copy, "dma", "copy between HBM and SBUF with cast"),
    _op(ins.MatMul, (_T,), {"dst": (_OUT, PSUM_ONLY), "stationary": (_IN, SBUF_ONLY),
                            "moving": (_IN, SBUF_ONLY)},
        sem.matmul, "matmul", "dst[M,N] (+)= stationary[K,M].T @ moving[K,N] in fp32"),
    _op(ins.Transpose, (_T,), {"dst": (_OUT, PSUM_ONLY), "src": (_IN, SBUF_ONLY)},
        sem.transpose, "transpose", "dst[F,P] = src[P,F].T through the PE array"),
    _op(ins.Activation, (_S,), {"dst": (_OUT, ON_CHIP), "src": (_IN, ON_CHIP),
                                "scale": _PER_PARTITION, "bias": _PER_PARTITION,
                                "reduce": (_OUT, ON_CHIP)},
        sem.activation, "activation", "dst = func(src*scale + bias), optional add-reduce"),
    _op(ins.TensorTensor, (_V, _G), {"dst": (_OUT, ON_CHIP), "in0": (_IN, ON_CHIP),
                                     "in1": (_IN, ON_CHIP)},
        sem.tensor_tensor, "tensor_tensor", "dst = in0 op in1"),
    _op(ins.TensorScalar, (_V, _S, _G), {"dst": (_OUT, ON_CHIP), "src": (_IN, ON_CHIP),
                                         "operand0": _PER_PARTITION,
                                         "operand1": _PER_PARTITION},
        sem.tensor_scalar, "one_input", "dst = (src op0 a) op1 b"),
    _op(ins.TensorReduce, (_V, _G), {"dst": (_OUT, ON_CHIP), "src": (_IN, ON_CHIP)},
        sem.tensor_reduce, "tensor_reduce", "reduce over free axes"),
    _op(ins.TensorCopy, (_V, _S, _G), {"dst": (_OUT, ON_CHIP), "src": (_IN, ON_CHIP)},
        sem.tensor_copy, "one_input", "copy with cast"),
    _op(ins.TensorTensorScan, (_V,), {"dst": (_OUT, ON_CHIP), "in0": (_IN, ON_CHIP),
                                      "in1": (_IN, ON_CHIP), "initial": _PER_PARTITION},
        sem.tensor_tensor_scan, "two_input", "per-partition scan along the free axis"),
    _op(ins.Memset, (_V, _G), {"dst": (_OUT, ON_CHIP)}, sem.memset, "one_input",
        "fill with a constant"),
    _op(ins.Iota, (_G,), {"dst": (_OUT, ON_CHIP)}, sem.iota, "gpsimd",
        "affine index values"),
    _op(ins.AffineSelect, (_G,), {"dst": (_OUT, ON_CHIP), "src": (_IN, ON_CHIP)},
        sem.affine_select, "gpsimd", "select by an affine predicate of the indices"),
    _op(ins.BnStats, (_V,), {"dst": (_OUT, ON_CHIP), "src": (_IN, ON_CHIP)},
        sem.bn_stats, "one_input", "per-partition (count, mean, M2) of two halves"),
    _op(ins.BnAggr, (_V,), {"dst": (_OUT, ON_CHIP), "src": (_IN, ON_CHIP)},
        sem.bn_aggr, "bn_aggr", "combine bn_stats triples into (mean, variance)"),
    _op(ins.Reciprocal, (_V,), {"dst": (_OUT, ON_CHIP), "src": (_IN, ON_CHIP)},
        sem.reciprocal, "reciprocal", "1/x at full precision"),
    _op(ins.AllReduce, (_D,), {"dst": (_OUT, OFF_PSUM), "src": (_IN, OFF_PSUM)},
        sem.all_reduce, "collective", "reduce src over the ranks into every dst", True),
    _op(ins.AllGather, (_D,), {"dst": (_OUT, OFF_PSUM), "src": (_IN, OFF_PSUM)},
        sem.all_gather, "collective", "concatenate every rank's src into every dst", True),
    _op(ins.ReduceScatter, (_D,), {"dst": (_OUT, OFF_PSUM), "src": (_IN, OFF_PSUM)},
        sem.reduce_scatter, "collective", "reduce src over the ranks, block i to rank i", True),
    _op(ins.Send, (_D,), {"src": (_IN, OFF_PSUM)}, sem.send_recv, "collective",
        "send src to a peer core", True),
    _op(ins.Recv, (_D,), {"dst": (_OUT, OFF_PSUM)}, sem.send_recv, "collective",
        "receive a peer core's send into dst", True),
)}


def opcode(name: str) -> OpSpec:
    """Look an opcode up by name; an unknown opcode raises."""
    if name in OPCODES:
        return OPCODES[name]
    raise KeyError(f"unknown opcode {name!r}; known: {', '.join(OPCODES)}")
