"""The operator table: every graph operator, declared once.

For each operator: its inputs (`x`, optional `bias?`, variadic `xs*`), its attribute schema (typed,
with defaults and limits), its shape/dtype inference, its numpy reference implementation (the
executable specification `evaluate` runs), its FLOP count and the tiling class the layout pass uses.
The builders, the ONNX importer, the IR check, the passes and the docs all read `OPS`; nothing
else lists operators.  References compute in fp32 (integers stay integers), as the engines do; the
caller rounds each result to its storage dtype.  Layouts are ONNX/PyTorch's: NCHW images, conv
weights [O, C/groups, kh, kw], matmul weights [K, N].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from math import prod
from numbers import Integral, Real

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from isa.dtypes import DTYPES, dtype
from kernels.graph.tensor import GraphError, TensorType

REQUIRED = object()  # marks an attribute without a default


# ---- attribute kinds --------------------------------------------------------------------------
def _to_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError("an int")
    return int(value)


def _to_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError("a number")
    return float(value)


def _to_bool(value: object) -> bool:
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return bool(value)
    raise TypeError("a bool")


def _to_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("a string")
    return value


def _to_ints(value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError("a sequence of ints")
    return tuple(_to_int(v) for v in value)


def _to_dtype(value: object) -> str:
    try:
        return dtype(value).name
    except (TypeError, ValueError):
        raise TypeError(f"a dtype name ({', '.join(DTYPES)})") from None


def _to_opt_float(value: object) -> float | None:
    return None if value is None else _to_float(value)


ATTR_KINDS: dict[str, Callable[[object], object]] = {
    "int": _to_int, "float": _to_float, "bool": _to_bool, "str": _to_str, "ints": _to_ints,
    "dtype": _to_dtype, "float?": _to_opt_float,
}


@dataclass(frozen=True)
class Attr:
    """One typed attribute of an operator.

    `length` fixes the number of ints (a single int is repeated to that length, and `pads` of
    length 4 also accepts one int or a (height, width) pair); `minimum` bounds every number.
    """

    name: str
    kind: str
    default: object = REQUIRED
    choices: tuple = ()
    length: int | None = None
    minimum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ATTR_KINDS:
            raise ValueError(f"attribute {self.name}: unknown kind {self.kind!r}")

    def normalize(self, value: object) -> object:
        if self.kind == "ints" and self.length is not None and isinstance(value, Integral):
            value = (value,) * self.length
        if self.kind == "ints" and self.length == 4 and isinstance(value, (tuple, list)) \
                and len(value) == 2:
            value = (value[0], value[1], value[0], value[1])  # (h, w) -> (top, left, bottom, right)
        try:
            out = ATTR_KINDS[self.kind](value)
        except TypeError as err:
            raise GraphError(f"attribute {self.name}={value!r} must be {err}") from None
        if self.length is not None and len(out) != self.length:
            raise GraphError(f"attribute {self.name}={out!r} must have {self.length} values")
        if self.choices and out not in self.choices:
            raise GraphError(f"attribute {self.name}={out!r} must be one of {self.choices}")
        if self.minimum is not None:
            numbers = out if isinstance(out, tuple) else (out,)
            if any(v is not None and v < self.minimum for v in numbers):
                raise GraphError(f"attribute {self.name}={out!r} must be >= {self.minimum:g}")
        return out


# ---- the operator record ----------------------------------------------------------------------
@dataclass(frozen=True)
class Operator:
    """One operator application's op name and its attributes, normalised by the op's schema.

    `Operator("conv2d", {"stride": 2})` fills defaults and rejects unknown or ill-typed attributes;
    attributes read as `record.stride` or `record["stride"]`.
    """

    op: str
    attrs: tuple[tuple[str, object], ...] | Mapping[str, object] = ()  # stored as a tuple

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise GraphError(f"unknown operator {self.op!r}; known: {', '.join(OPS)}")
        given = dict(self.attrs)
        if not isinstance(self.attrs, dict) and len(given) != len(self.attrs):
            raise GraphError(f"{self.op}: an attribute is given twice in {self.attrs!r}")
        object.__setattr__(self, "attrs", OPS[self.op].normalize_attrs(given))

    def __getitem__(self, name: str) -> object:
        for key, value in self.attrs:
            if key == name:
                return value
        raise KeyError(f"{self.op} has no attribute {name!r}")

    def __getattr__(self, name: str) -> object:
        if name.startswith("_") or name in ("op", "attrs"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(str(err)) from None

    def replace(self, **changes: object) -> Operator:
        return Operator(self.op, {**dict(self.attrs), **changes})

    def format_attrs(self) -> str:
        return " ".join(f"{k}={_fmt(v)}" for k, v in self.attrs)

    def __str__(self) -> str:
        text = self.format_attrs()
        return f"{self.op}[{text}]" if text else self.op


def _fmt(value: object) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(str(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---- the operator definition ------------------------------------------------------------------
Infer = Callable[[Operator, tuple[TensorType, ...]], tuple[TensorType, ...]]
Reference = Callable[[Operator, list[np.ndarray]], tuple[np.ndarray, ...]]
Flops = Callable[[Operator, tuple[TensorType, ...], tuple[TensorType, ...]], int]

TILINGS = ("source", "gemm", "attention", "elementwise", "rows", "pool", "dma")


@dataclass(frozen=True)
class OpDef:
    """Everything the project knows about one graph operator."""

    name: str
    inputs: tuple[str, ...]  # "x"; "bias?" optional (trailing); "xs*" variadic, one or more
    attrs: tuple[Attr, ...]
    infer: Infer
    reference: Reference | None  # None for sources, whose values come from the graph
    flops: Flops
    tiling: str
    summary: str
    outputs: Callable[[Operator], int] = field(default=lambda op: 1)

    def __post_init__(self) -> None:
        if self.tiling not in TILINGS:
            raise ValueError(f"op {self.name}: tiling {self.tiling!r} not in {TILINGS}")

    def normalize_attrs(self, given: dict[str, object]) -> tuple[tuple[str, object], ...]:
        known = {a.name for a in self.attrs}
        unknown = sorted(set(given) - known)
        if unknown:
            raise GraphError(f"{self.name}: unknown attribute(s) {', '.join(unknown)}; "
                             f"attributes: {', '.join(sorted(known)) or 'none'}")
        out = []
        for a in self.attrs:
            if a.name in given:
                value = a.normalize(given[a.name])
            elif a.default is REQUIRED:
                raise GraphError(f"{self.name}: attribute {a.name} is required")
            else:
                value = a.default
            out.append((a.name, value))
        return tuple(out)

    @property
    def arity(self) -> tuple[int, int | None]:
        """(minimum, maximum) number of inputs; maximum None for a variadic op."""
        required = sum(1 for n in self.inputs if not n.endswith(("?", "*")))
        if any(n.endswith("*") for n in self.inputs):
            return required + 1, None
        return required, len(self.inputs)

    def check_arity(self, count: int) -> None:
        low, high = self.arity
        if count < low or (high is not None and count > high):
            expected = f"{low}" if low == high else f"{low}..{'' if high is None else high}"
            raise GraphError(f"{self.name} takes {expected} inputs "
                             f"({', '.join(self.inputs)}), got {count}")


# ---- inference helpers ------------------------------------------------------------------------
def _floats(op: Operator, types: Sequence[TensorType]) -> None:
    """All of `types` are float and of one dtype (ops never convert implicitly)."""
    for t in types:
        if not t.dtype.is_float:
            raise GraphError(f"{op.op} needs float inputs, got {t}")
    names = {t.dtype.name for t in types}
    if len(names) > 1:
        raise GraphError(f"{op.op}: dtype clash between inputs "
                         f"{', '.join(str(t) for t in types)}")


def _axis(axis: int, ndim: int, what: str) -> int:
    if not -ndim <= axis < ndim:
        raise GraphError(f"{what} {axis} is out of range for {ndim} dimensions")
    return axis % ndim


def _broadcast(op: Operator, types: Sequence[TensorType]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*(t.shape for t in types)))
    except ValueError:
        raise GraphError(f"{op.op}: shapes {' and '.join(str(t) for t in types)} do not "
                         "broadcast") from None


def _source(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    return (TensorType(op.shape, op.dtype),)


def _matmul(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    x, w = ins[0], ins[1]
    _floats(op, ins)
    if w.ndim != 2:
        raise GraphError(f"{op.op}: weight must be 2-D [K, N], got {w}")
    if x.ndim < 1:
        raise GraphError(f"{op.op}: x must have at least one dimension, got {x}")
    if x.shape[-1] != w.shape[0]:
        raise GraphError(f"{op.op}: contraction mismatch, x {x} has K={x.shape[-1]} but weight "
                         f"{w} has K={w.shape[0]}")
    if len(ins) == 3 and ins[2].shape != (w.shape[1],):
        raise GraphError(f"{op.op}: bias must be [{w.shape[1]}], got {ins[2]}")
    return (TensorType(x.shape[:-1] + (w.shape[1],), x.dtype),)


def _batch_matmul(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    a, b = ins
    _floats(op, ins)
    if a.ndim < 2 or b.ndim < 2:
        raise GraphError(f"{op.op}: both operands need 2 or more dimensions, got {a} and {b}")
    k_b, n = (b.shape[-1], b.shape[-2]) if op.transpose_b else (b.shape[-2], b.shape[-1])
    if a.shape[-1] != k_b:
        raise GraphError(f"{op.op}: contraction mismatch, {a} has K={a.shape[-1]} but {b} "
                         f"has K={k_b} (transpose_b={op.transpose_b})")
    batch = _broadcast(op, (a.with_shape(a.shape[:-2]), b.with_shape(b.shape[:-2])))
    return (TensorType(batch + (a.shape[-2], n), a.dtype),)


def _window(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int,
            what: str) -> int:
    span = dilation * (kernel - 1) + 1
    padded = size + pad_lo + pad_hi
    if padded < span:
        raise GraphError(f"{what}: window {span} is larger than the padded input {padded}")
    return (padded - span) // stride + 1


def _conv2d(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    x, w = ins[0], ins[1]
    _floats(op, ins)
    if x.ndim != 4 or w.ndim != 4:
        raise GraphError(f"conv2d: input must be [N,C,H,W] and weight [O,C/groups,kh,kw], got "
                         f"{x} and {w}")
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    g = op.groups
    if c % g or o % g:
        raise GraphError(f"conv2d: channels in {c} and out {o} must divide by groups={g}")
    if cg != c // g:
        raise GraphError(f"conv2d: weight {w} needs {c // g} input channels per group "
                         f"(C={c}, groups={g}), has {cg}")
    if len(ins) == 3 and ins[2].shape != (o,):
        raise GraphError(f"conv2d: bias must be [{o}], got {ins[2]}")
    top, left, bottom, right = op.padding
    ho = _window(h, kh, op.stride[0], top, bottom, op.dilation[0], "conv2d height")
    wo = _window(wd, kw, op.stride[1], left, right, op.dilation[1], "conv2d width")
    return (TensorType((n, o, ho, wo), x.dtype),)


def _pool2d(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    (x,) = ins
    _floats(op, ins)
    if x.ndim != 4:
        raise GraphError(f"{op.op}: input must be [N,C,H,W], got {x}")
    top, left, bottom, right = op.padding
    kh, kw = op.kernel
    if max(top, bottom) >= kh or max(left, right) >= kw:
        raise GraphError(f"{op.op}: padding {op.padding} must be smaller than kernel {op.kernel}")
    ho = _window(x.shape[2], kh, op.stride[0], top, bottom, 1, f"{op.op} height")
    wo = _window(x.shape[3], kw, op.stride[1], left, right, 1, f"{op.op} width")
    return (x.with_shape(x.shape[:2] + (ho, wo)),)


def _global_pool(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    (x,) = ins
    _floats(op, ins)
    if x.ndim != 4:
        raise GraphError(f"{op.op}: input must be [N,C,H,W], got {x}")
    return (x.with_shape(x.shape[:2] + (1, 1)),)


def _attention(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    q, k, v = ins[:3]
    _floats(op, ins)
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise GraphError(f"attention: q, k, v need the same rank >= 2 ([..., S, D]), got "
                         f"{q}, {k}, {v}")
    if q.shape[:-2] != k.shape[:-2] or q.shape[:-2] != v.shape[:-2]:
        raise GraphError(f"attention: leading (batch, head) dims differ: {q}, {k}, {v}")
    if q.shape[-1] != k.shape[-1]:
        raise GraphError(f"attention: q {q} and k {k} head dims differ")
    if k.shape[-2] != v.shape[-2]:
        raise GraphError(f"attention: k {k} and v {v} key counts differ")
    sq, sk = q.shape[-2], k.shape[-2]
    if op.causal and sq > sk:
        raise GraphError(f"attention: causal with {sq} queries > {sk} keys leaves rows empty")
    if len(ins) == 4:
        scores = q.with_shape(q.shape[:-1] + (sk,))
        try:
            fits = np.broadcast_shapes(scores.shape, ins[3].shape) == scores.shape
        except ValueError:
            fits = False
        if not fits:
            raise GraphError(f"attention: mask {ins[3]} does not broadcast to scores {scores}")
    return (q.with_shape(q.shape[:-1] + (v.shape[-1],)),)


def _elementwise(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    _floats(op, ins)
    return (ins[0].with_shape(_broadcast(op, ins)),)


def _unary(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    _floats(op, ins)
    return (ins[0],)


def _softmax(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    _floats(op, ins)
    _axis(op.axis, ins[0].ndim, "softmax axis")
    return (ins[0],)


def _norm_params(op: Operator, x: TensorType, params: Sequence[TensorType]) -> None:
    if x.ndim < 1:
        raise GraphError(f"{op.op}: input must have at least one dimension")
    for p in params:
        if p.shape != x.shape[-1:]:
            raise GraphError(f"{op.op}: scale/shift must be [{x.shape[-1]}] (the last axis of "
                             f"{x}), got {p}")


def _norm(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    _floats(op, ins)
    _norm_params(op, ins[0], ins[1:])
    return (ins[0],)


def _add_norm(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    _floats(op, ins)
    a, b = ins[:2]
    if a.shape != b.shape:
        raise GraphError(f"add_layernorm: residual operands differ: {a} and {b}")
    _norm_params(op, a, ins[2:])
    return (a, a)


def resolve_shape(requested: Sequence[int], size: int) -> tuple[int, ...]:
    """A reshape target with at most one -1 resolved against `size` elements."""
    if sum(1 for d in requested if d == -1) > 1 or any(d < -1 for d in requested):
        raise GraphError(f"reshape: shape {tuple(requested)} may hold one -1 and no other "
                         "negative dims")
    known = prod(d for d in requested if d != -1)
    if -1 in requested:
        if known == 0 or size % known:
            raise GraphError(f"reshape: cannot infer -1 in {tuple(requested)} for {size} "
                             "elements")
        return tuple(size // known if d == -1 else d for d in requested)
    if known != size:
        raise GraphError(f"reshape: {size} elements do not fit shape {tuple(requested)}")
    return tuple(requested)


def _reshape(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    return (ins[0].with_shape(resolve_shape(op.shape, ins[0].size)),)


def _transpose(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    (x,) = ins
    if sorted(op.perm) != list(range(x.ndim)):
        raise GraphError(f"transpose: perm {op.perm} is not a permutation of {x.ndim} axes")
    return (x.with_shape(tuple(x.shape[p] for p in op.perm)),)


def _concat(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    first = ins[0]
    axis = _axis(op.axis, first.ndim, "concat axis")
    for t in ins[1:]:
        if t.dtype != first.dtype:
            raise GraphError(f"concat: dtype clash between {first} and {t}")
        if t.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape))
                                       if i != axis):
            raise GraphError(f"concat: {t} does not match {first} outside axis {axis}")
    total = sum(t.shape[axis] for t in ins)
    return (first.with_shape(first.shape[:axis] + (total,) + first.shape[axis + 1:]),)


def _split(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    (x,) = ins
    axis = _axis(op.axis, x.ndim, "split axis")
    if sum(op.sizes) != x.shape[axis]:
        raise GraphError(f"split: sizes {op.sizes} do not add up to dim {axis} of {x}")
    return tuple(x.with_shape(x.shape[:axis] + (s,) + x.shape[axis + 1:]) for s in op.sizes)


def slice_bounds(op: Operator, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The numpy index of a `slice` operator on a tensor of `shape` (Python slice clamping)."""
    steps = op.steps or (1,) * len(op.starts)
    if not len(op.starts) == len(op.ends) == len(op.axes) == len(steps):
        raise GraphError(f"slice: starts {op.starts}, ends {op.ends}, axes {op.axes} and steps "
                         f"{op.steps} must have one entry per sliced axis")
    index = [slice(None)] * len(shape)
    seen = set()
    for start, end, axis, step in zip(op.starts, op.ends, op.axes, steps):
        axis = _axis(axis, len(shape), "slice axis")
        if axis in seen:
            raise GraphError(f"slice: axis {axis} is sliced twice")
        seen.add(axis)
        index[axis] = slice(*slice(start, end, step).indices(shape[axis]))
    return tuple(index)


def _slice(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    (x,) = ins
    index = slice_bounds(op, x.shape)
    return (x.with_shape(tuple(len(range(*s.indices(d))) for s, d in zip(index, x.shape))),)


def _gather(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    data, indices = ins
    if indices.dtype.is_float:
        raise GraphError(f"gather: indices must be integers, got {indices}")
    axis = _axis(op.axis, data.ndim, "gather axis")
    return (data.with_shape(data.shape[:axis] + indices.shape + data.shape[axis + 1:]),)


def _all_gather(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    (x,) = ins
    axis = _axis(op.axis, x.ndim, "all_gather axis")
    return (x.with_shape(x.shape[:axis] + (x.shape[axis] * op.group_size,) + x.shape[axis + 1:]),)


def _reduce_scatter(op: Operator, ins: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
    _floats(op, ins)
    (x,) = ins
    axis = _axis(op.axis, x.ndim, "reduce_scatter axis")
    if x.shape[axis] % op.group_size:
        raise GraphError(f"reduce_scatter: dim {axis} of {x} does not divide by group_size="
                         f"{op.group_size}")
    return (x.with_shape(x.shape[:axis] + (x.shape[axis] // op.group_size,) + x.shape[axis + 1:]),)


# ---- numpy references -------------------------------------------------------------------------
def erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 to ~1e-7 relative error (numpy has none): Maclaurin series below 0.5,
    the Chebyshev fit of erfc (Numerical Recipes `erfcc`, fractional error < 1.2e-7) above."""
    x = np.asarray(x, np.float64)
    ax = np.abs(x)
    small = x * (1.0 - x**2 / 3.0 + x**4 / 10.0 - x**6 / 42.0 + x**8 / 216.0 - x**10 / 1320.0
                 + x**12 / 9360.0) * (2.0 / math.sqrt(math.pi))
    t = 1.0 / (1.0 + 0.5 * ax)
    poly = -ax * ax - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    large = np.sign(x) * (1.0 - t * np.exp(poly))
    return np.where(ax < 0.5, small, large)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x << 0: sigmoid -> 0
        return 1.0 / (1.0 + np.exp(-x))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

# Activation functions a `linear` may fuse, and the unary ops compute through.
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))),
    "silu": lambda x: x * _sigmoid(x),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
}


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32)


def _act(name: str) -> Reference:
    return lambda op, xs: (_f32(ACTIVATIONS[name](xs[0])),)


def _ref_gelu(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    return (_f32(ACTIVATIONS["gelu" if op.approximate == "none" else "gelu_tanh"](xs[0])),)


def _ref_exp(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    with np.errstate(over="ignore"):
        return (_f32(np.exp(xs[0])),)


def _ref_matmul(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    return (_f32(xs[0] @ xs[1]),)


def _ref_linear(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    pre = xs[0] @ xs[1]
    if len(xs) == 3:
        pre = pre + xs[2]
    return (_f32(ACTIVATIONS[op.activation](pre)),)


def _ref_batch_matmul(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    b = np.swapaxes(xs[1], -1, -2) if op.transpose_b else xs[1]
    return (_f32(np.matmul(xs[0], b)),)


def _ref_conv2d(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    x, w = xs[0], xs[1]
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    top, left, bottom, right = op.padding
    (sh, sw), (dh, dw), g = op.stride, op.dilation, op.groups
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    # windows[n, c, i, j, a, b] = padded[n, c, i + a, j + b]; dilation and stride by slicing.
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    windows = sliding_window_view(padded, (span_h, span_w), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]
    ho, wo = windows.shape[2], windows.shape[3]
    og = o // g
    out = np.empty((n, o, ho, wo), np.float32)
    for group in range(g):  # implicit GEMM per group: [N*Ho*Wo, Cg*kh*kw] @ [Cg*kh*kw, Og]
        cols = windows[:, group * cg:(group + 1) * cg].transpose(0, 2, 3, 1, 4, 5)
        cols = cols.reshape(n * ho * wo, cg * kh * kw)
        weight = w[group * og:(group + 1) * og].reshape(og, cg * kh * kw)
        out[:, group * og:(group + 1) * og] = (cols @ weight.T).reshape(n, ho, wo, og) \
            .transpose(0, 3, 1, 2)
    if len(xs) == 3:
        out += xs[2].reshape(1, o, 1, 1)
    return (out,)


def _pool_windows(op: Operator, x: np.ndarray, fill: float) -> np.ndarray:
    top, left, bottom, right = op.padding
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    windows = sliding_window_view(padded, tuple(op.kernel), axis=(2, 3))
    return windows[:, :, ::op.stride[0], ::op.stride[1]]


def _ref_maxpool(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    return (_f32(_pool_windows(op, xs[0], -np.inf).max(axis=(4, 5))),)


def _ref_avgpool(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    total = _pool_windows(op, xs[0], 0.0).sum(axis=(4, 5))
    if op.count_include_pad:
        count = np.float32(op.kernel[0] * op.kernel[1])
    else:  # divide by the number of real (unpadded) elements in each window
        ones = np.ones((1, 1) + xs[0].shape[2:], np.float32)
        count = _pool_windows(op, ones, 0.0).sum(axis=(4, 5))
    return (_f32(total / count),)


def _ref_global_avgpool(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    return (_f32(xs[0].mean(axis=(2, 3), keepdims=True)),)


def _softmax_values(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def _ref_attention(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    q, k, v = xs[:3]
    scale = op.scale if op.scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * np.float32(scale)
    if len(xs) == 4:
        scores = scores + xs[3]
    if op.causal:  # bottom-right aligned: query i sits at key position i + (Sk - Sq)
        sq, sk = scores.shape[-2:]
        allowed = np.arange(sk)[None, :] <= np.arange(sq)[:, None] + (sk - sq)
        scores = np.where(allowed, scores, -np.inf)
    return (_f32(np.matmul(_softmax_values(scores, -1), v)),)


def _ref_softmax(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    return (_f32(_softmax_values(xs[0], op.axis)),)


def _layernorm_values(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None,
                      eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    out = centred / np.sqrt(var + np.float32(eps)) * gamma
    return out if beta is None else out + beta


def _ref_layernorm(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    return (_f32(_layernorm_values(xs[0], xs[1], xs[2] if len(xs) == 3 else None, op.eps)),)


def _ref_rmsnorm(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    x = xs[0]
    return (_f32(x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + np.float32(op.eps)) * xs[1]),)


def _ref_add_layernorm(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    total = _f32(xs[0] + xs[1])
    beta = xs[3] if len(xs) == 4 else None
    return (_f32(_layernorm_values(total, xs[2], beta, op.eps)), total)


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Reference:
    def reference(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        with np.errstate(divide="ignore", invalid="ignore"):  # x/0 -> inf or nan, as IEEE says
            return (_f32(fn(xs[0], xs[1])),)
    return reference


def _ref_reshape(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    return (xs[0].reshape(resolve_shape(op.shape, xs[0].size)),)


def _ref_slice(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    return (np.ascontiguousarray(xs[0][slice_bounds(op, xs[0].shape)]),)


def _ref_split(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    cuts = np.cumsum(op.sizes)[:-1]
    return tuple(np.ascontiguousarray(p) for p in np.split(xs[0], cuts, axis=op.axis))


def _ref_gather(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    data, indices = xs
    axis = op.axis % data.ndim
    n = data.shape[axis]
    if indices.size and (indices.min() < -n or indices.max() >= n):
        raise GraphError(f"gather: an index is outside -{n}..{n - 1} (dim {axis} of the data)")
    return (np.take(data, indices.astype(np.int64), axis=axis),)


def _ref_reduce_scatter(op: Operator, xs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    x = xs[0]
    block = x.shape[op.axis] // op.group_size
    return (np.ascontiguousarray(np.take(x, np.arange(block), axis=op.axis)),)


# ---- FLOP counts (multiply-add = 2; elementwise ops ~ one per element, as stated) -------------
def _no_flops(op: Operator, ins: tuple[TensorType, ...], outs: tuple[TensorType, ...]) -> int:
    return 0


def _per_output(factor: int) -> Flops:
    return lambda op, ins, outs: factor * outs[0].size


def _gemm_flops(op: Operator, ins: tuple[TensorType, ...], outs: tuple[TensorType, ...]) -> int:
    k = ins[0].shape[-1]
    extra = (len(ins) == 3) + (op.op == "linear" and op.activation != "none")
    return (2 * k + extra) * outs[0].size


def _conv_flops(op: Operator, ins: tuple[TensorType, ...], outs: tuple[TensorType, ...]) -> int:
    _, cg, kh, kw = ins[1].shape
    return (2 * cg * kh * kw + (len(ins) == 3)) * outs[0].size


def _attention_flops(op: Operator, ins: tuple[TensorType, ...],
                     outs: tuple[TensorType, ...]) -> int:
    q, k, v = ins[:3]
    rows = prod(q.shape[:-1])  # every (batch, head, query)
    return rows * k.shape[-2] * (2 * q.shape[-1] + 2 * v.shape[-1] + 5)  # QK^T, PV, softmax


def _pool_flops(op: Operator, ins: tuple[TensorType, ...], outs: tuple[TensorType, ...]) -> int:
    return outs[0].size * op.kernel[0] * op.kernel[1]


# ---- the table --------------------------------------------------------------------------------
_POS = 1  # minimum of sizes that must be positive
_SHAPE = (Attr("shape", "ints", minimum=0), Attr("dtype", "dtype", "fp32"))
_POOL = (Attr("kernel", "ints", length=2, minimum=_POS),
         Attr("stride", "ints", (1, 1), length=2, minimum=_POS),
         Attr("padding", "ints", (0, 0, 0, 0), length=4, minimum=0))
_GROUP = Attr("group_size", "int", minimum=_POS)


def _def(name: str, inputs: tuple[str, ...], attrs: tuple[Attr, ...], infer: Infer,
         reference: Reference | None, flops: Flops, tiling: str, summary: str,
         outputs: Callable[[Operator], int] | None = None) -> OpDef:
    extra = {} if outputs is None else {"outputs": outputs}
    return OpDef(name, inputs, attrs, infer, reference, flops, tiling, summary, **extra)


def _unary_def(name: str, summary: str, reference: Reference,
               attrs: tuple[Attr, ...] = ()) -> OpDef:
    return _def(name, ("x",), attrs, _unary, reference, _per_output(1), "elementwise", summary)


def _binary_def(name: str, fn: Callable, summary: str) -> OpDef:
    return _def(name, ("a", "b"), (), _elementwise, _binary(fn), _per_output(1), "elementwise",
                summary)


OPS: dict[str, OpDef] = {d.name: d for d in (
    # sources: values come from the caller (input) or the graph (constant)
    _def("input", (), _SHAPE, _source, None, _no_flops, "source", "a graph input"),
    _def("constant", (), _SHAPE, _source, None, _no_flops, "source",
         "a constant (weight) held by the graph"),
    # matrix multiplication and convolution
    _def("matmul", ("x", "w"), (), _matmul, _ref_matmul, _gemm_flops, "gemm",
         "x[..., K] @ w[K, N]"),
    _def("linear", ("x", "w", "bias?"),
         (Attr("activation", "str", "none", choices=tuple(ACTIVATIONS)),),
         _matmul, _ref_linear, _gemm_flops, "gemm", "activation(x[..., K] @ w[K, N] + bias[N])"),
    _def("batch_matmul", ("a", "b"), (Attr("transpose_b", "bool", False),), _batch_matmul,
         _ref_batch_matmul, _gemm_flops, "gemm",
         "a[..., M, K] @ b[..., K, N] (b[..., N, K] if transpose_b), batch dims broadcast"),
    _def("conv2d", ("x", "w", "bias?"),
         (Attr("stride", "ints", (1, 1), length=2, minimum=_POS),
          Attr("padding", "ints", (0, 0, 0, 0), length=4, minimum=0),
          Attr("dilation", "ints", (1, 1), length=2, minimum=_POS),
          Attr("groups", "int", 1, minimum=_POS)),
         _conv2d, _ref_conv2d, _conv_flops, "gemm",
         "x[N,C,H,W] * w[O,C/groups,kh,kw] + bias[O]; padding (top, left, bottom, right)"),
    _def("attention", ("q", "k", "v", "mask?"),
         (Attr("causal", "bool", False), Attr("scale", "float?", None)),
         _attention, _ref_attention, _attention_flops, "attention",
         "softmax(q k^T * scale + mask [causal]) v over [..., S, D]; scale 1/sqrt(D) if None; "
         "causal is bottom-right aligned (query i sees keys <= i + Sk - Sq)"),
    # pooling
    _def("maxpool2d", ("x",), _POOL, _pool2d, _ref_maxpool, _pool_flops, "pool",
         "max over kernel windows of [N,C,H,W]; padding is -inf"),
    _def("avgpool2d", ("x",), _POOL + (Attr("count_include_pad", "bool", False),), _pool2d,
         _ref_avgpool, _pool_flops, "pool",
         "mean over kernel windows; padding excluded from the count unless count_include_pad"),
    _def("global_avgpool", ("x",), (), _global_pool, _ref_global_avgpool, _per_output(1), "pool",
         "[N,C,H,W] -> [N,C,1,1] mean over H, W"),
    # elementwise
    _binary_def("add", np.add, "a + b, numpy broadcasting"),
    _binary_def("sub", np.subtract, "a - b, numpy broadcasting"),
    _binary_def("mul", np.multiply, "a * b, numpy broadcasting"),
    _binary_def("div", np.divide, "a / b, numpy broadcasting"),
    _unary_def("relu", "max(x, 0)", _act("relu")),
    _unary_def("gelu", "x * Phi(x); approximate='tanh' is GPT-2's tanh form", _ref_gelu,
               (Attr("approximate", "str", "none", choices=("none", "tanh")),)),
    _unary_def("silu", "x * sigmoid(x)", _act("silu")),
    _unary_def("tanh", "tanh(x)", _act("tanh")),
    _unary_def("sigmoid", "1 / (1 + exp(-x))", _act("sigmoid")),
    _unary_def("exp", "exp(x)", _ref_exp),
    _unary_def("erf", "the error function", lambda op, xs: (_f32(erf(xs[0])),)),
    # normalisation
    _def("softmax", ("x",), (Attr("axis", "int", -1),), _softmax, _ref_softmax, _per_output(5),
         "rows", "exp(x - max) / sum along axis"),
    _def("layernorm", ("x", "gamma", "beta?"), (Attr("eps", "float", 1e-5, minimum=0),), _norm,
         _ref_layernorm, _per_output(5), "rows",
         "(x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance)"),
    _def("rmsnorm", ("x", "gamma"), (Attr("eps", "float", 1e-6, minimum=0),), _norm,
         _ref_rmsnorm, _per_output(4), "rows", "x / sqrt(mean(x^2) + eps) * gamma, last axis"),
    _def("add_layernorm", ("a", "b", "gamma", "beta?"), (Attr("eps", "float", 1e-5, minimum=0),),
         _add_norm, _ref_add_layernorm, _per_output(6), "rows",
         "fused residual: outputs (layernorm(a + b), a + b)", outputs=lambda op: 2),
    # data movement
    _def("reshape", ("x",), (Attr("shape", "ints"),), _reshape, _ref_reshape, _no_flops, "dma",
         "same elements, new shape (one -1 is inferred)"),
    _def("transpose", ("x",), (Attr("perm", "ints"),), _transpose,
         lambda op, xs: (np.ascontiguousarray(np.transpose(xs[0], op.perm)),), _no_flops, "dma",
         "permute axes: out.shape[i] = x.shape[perm[i]]"),
    _def("concat", ("xs*",), (Attr("axis", "int"),), _concat,
         lambda op, xs: (np.concatenate(xs, axis=op.axis),), _no_flops, "dma",
         "concatenate along axis"),
    _def("split", ("x",), (Attr("axis", "int"), Attr("sizes", "ints", minimum=_POS)), _split,
         _ref_split, _no_flops, "dma", "split along axis into pieces of `sizes`",
         outputs=lambda op: len(op.sizes)),
    _def("slice", ("x",), (Attr("starts", "ints"), Attr("ends", "ints"), Attr("axes", "ints"),
                           Attr("steps", "ints", (), minimum=_POS)),
         _slice, _ref_slice, _no_flops, "dma",
         "x[start:end:step] on each listed axis, clamped as Python slices; steps default 1"),
    _def("gather", ("data", "indices"), (Attr("axis", "int", 0),), _gather, _ref_gather,
         _no_flops, "dma", "np.take(data, indices, axis); an embedding lookup is axis=0"),
    # collectives: single-device reference semantics (see `reference.py`)
    _def("all_reduce", ("x",), (_GROUP,), _unary, lambda op, xs: (xs[0].copy(),), _no_flops,
         "dma", "sum over the group; alone: identity"),
    _def("all_gather", ("x",), (_GROUP, Attr("axis", "int", 0)), _all_gather,
         lambda op, xs: (np.concatenate([xs[0]] * op.group_size, axis=op.axis),), _no_flops,
         "dma", "concatenate every rank's x along axis; alone: x repeated group_size times"),
    _def("reduce_scatter", ("x",), (_GROUP, Attr("axis", "int", 0)), _reduce_scatter,
         _ref_reduce_scatter, _no_flops, "dma",
         "sum over the group, block r of axis to rank r; alone: this rank's block (block 0)"),
)}

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter")


def format_ops() -> str:
    """The operator table as text: one line per op with its inputs, attributes and summary."""
    lines = []
    for d in OPS.values():
        attrs = ", ".join(a.name + ("" if a.default is REQUIRED else f"={_fmt(a.default)}")
                          for a in d.attrs)
        lines.append(f"{d.name:15s} ({', '.join(d.inputs)}) [{attrs}]  {d.summary}")
    return "\n".join(lines)
