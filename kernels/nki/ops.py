"""Operator values of the NKI language (`nl.add`, `nl.exp`, `nl.sum`, ...) and what they lower to.

One table: each operator value names the ALU op it is inside `tensor_tensor` / `tensor_scalar` /
`tensor_tensor_scan`, the activation function it is inside `activation`, the reduction it is
inside `tensor_reduce`, and the comparison it is inside `affine_select`; the numpy functions older
kernels pass instead (`np.add`, `np.multiply`, ...) map onto the same entries.  Called directly
(`nl.exp(tile)`), an operator computes a new SBUF tile (see `kernels.nki.elementwise`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kernels.nki.errors import UnsupportedConstructError

# What `nl.<name>(...)` computes when called: binary and unary element-wise ops, reductions.
CALL_KINDS = ("binary", "unary", "reduce", "none")


@dataclass(frozen=True)
class Op:
    """An NKI operator value and its lowering in each instruction that accepts one."""

    name: str
    alu: str | None = None  # isa ALU op (tensor_tensor, tensor_scalar, scan)
    activation: str | None = None  # isa activation function (Scalar engine)
    reduce: str | None = None  # isa tensor_reduce op
    compare: str | None = None  # isa affine_select comparison of the affine value with 0
    call: str = "binary"
    commutative: bool = False

    def __post_init__(self) -> None:
        if self.call not in CALL_KINDS:
            raise ValueError(f"op {self.name}: call kind {self.call!r} not in {CALL_KINDS}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Imported here: the element-wise functions need tiles, which need this table.
        from kernels.nki import elementwise
        return elementwise.call(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"nl.{self.name}"


def _unary(name: str, activation: str) -> Op:
    return Op(name, activation=activation, call="unary")


OPS: dict[str, Op] = {op.name: op for op in (
    Op("add", alu="add", reduce="add", commutative=True),
    Op("subtract", alu="subtract"),
    Op("multiply", alu="multiply", commutative=True),
    Op("divide", alu="divide"),
    Op("maximum", alu="max", reduce="max", commutative=True),
    Op("minimum", alu="min", reduce="min", commutative=True),
    Op("power", alu="pow"),
    Op("equal", alu="is_equal", compare="eq", commutative=True),
    Op("not_equal", alu="not_equal", compare="ne", commutative=True),
    Op("greater", alu="is_gt", compare="gt"),
    Op("greater_equal", alu="is_ge", compare="ge"),
    Op("less", alu="is_lt", compare="lt"),
    Op("less_equal", alu="is_le", compare="le"),
    Op("bitwise_and", alu="bitwise_and", commutative=True),
    Op("bitwise_or", alu="bitwise_or", commutative=True),
    Op("bitwise_xor", alu="bitwise_xor", commutative=True),
    Op("left_shift", alu="logical_shift_left"),
    Op("right_shift", alu="logical_shift_right"),
    Op("bypass", alu="bypass", call="none"),
    # Reductions; as op values `nl.max`/`nl.min` also name the element-wise ALU op.
    Op("sum", reduce="add", call="reduce"),
    Op("max", alu="max", reduce="max", call="reduce", commutative=True),
    Op("min", alu="min", reduce="min", call="reduce", commutative=True),
    Op("mean", call="reduce"),  # a sum, then a multiply by 1/count
    # Activation functions of the Scalar engine.
    _unary("exp", "exp"),
    _unary("log", "log"),
    _unary("tanh", "tanh"),
    _unary("sigmoid", "sigmoid"),
    _unary("relu", "relu"),
    _unary("gelu", "gelu"),
    _unary("gelu_apprx_tanh", "gelu_apprx_tanh"),
    _unary("silu", "silu"),
    _unary("sqrt", "sqrt"),
    _unary("rsqrt", "rsqrt"),
    _unary("reciprocal", "reciprocal"),
    _unary("square", "square"),
    _unary("abs", "abs"),
    _unary("copy", "copy"),
    Op("negative", call="unary"),  # no activation: a tensor_scalar multiply by -1
)}

# numpy functions accepted as op values (older kernels pass np.add, np.multiply, ...).
NUMPY_ALIASES: dict[Any, Op] = {
    np.add: OPS["add"], np.subtract: OPS["subtract"], np.multiply: OPS["multiply"],
    np.divide: OPS["divide"], np.maximum: OPS["maximum"], np.minimum: OPS["minimum"],
    np.power: OPS["power"], np.equal: OPS["equal"], np.not_equal: OPS["not_equal"],
    np.greater: OPS["greater"], np.greater_equal: OPS["greater_equal"], np.less: OPS["less"],
    np.less_equal: OPS["less_equal"], np.bitwise_and: OPS["bitwise_and"],
    np.bitwise_or: OPS["bitwise_or"], np.bitwise_xor: OPS["bitwise_xor"],
    np.left_shift: OPS["left_shift"], np.right_shift: OPS["right_shift"],
    np.sum: OPS["sum"], np.max: OPS["max"], np.min: OPS["min"], np.mean: OPS["mean"],
    np.exp: OPS["exp"], np.log: OPS["log"], np.tanh: OPS["tanh"], np.sqrt: OPS["sqrt"],
    np.reciprocal: OPS["reciprocal"], np.square: OPS["square"], np.abs: OPS["abs"],
    np.negative: OPS["negative"], np.copy: OPS["copy"],
}

# Which field of an Op each use needs, and how an error names that use.
_ROLES = {"alu": "an ALU operator", "activation": "an activation function",
          "reduce": "a reduction operator", "compare": "a comparison operator"}


def describe(value: Any) -> str:
    """How an error names an op value: `nl.exp`, `numpy.arctan2`, or its repr."""
    if isinstance(value, Op):
        return repr(value)
    if isinstance(value, np.ufunc) or getattr(value, "__module__", None) == "numpy":
        return f"numpy.{getattr(value, '__name__', value)}"
    return getattr(value, "__qualname__", None) or repr(value)


def resolve(value: Any, use: str, where: str) -> Op:
    """The Op for an op value used as `use` (alu/activation/reduce/compare) in `where`.

    Unknown values and ops without a lowering for this use raise, naming the value, the use and
    the ops that would work there.
    """
    op = value if isinstance(value, Op) else _alias(value)
    if op is None or getattr(op, use) is None:
        usable = ", ".join(f"nl.{o.name}" for o in OPS.values() if getattr(o, use) is not None)
        raise UnsupportedConstructError(
            f"{where}: op value {describe(value)} is not supported as {_ROLES[use]}; "
            f"supported: {usable}")
    return op


def _alias(value: Any) -> Op | None:
    try:
        return NUMPY_ALIASES.get(value)
    except TypeError:  # unhashable values are no op
        return None
