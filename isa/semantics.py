"""The executable specification: what every opcode does to values, in plain numpy.

Each function takes the instruction record and its read operands as arrays of the operand's
logical shape (partitions, *free sizes) in their storage dtype, and returns the values of its
written operands.  Engines compute in fp32 (ints in int64); the executor casts results to the
destination dtype on write.  Timing never lives here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from isa.dtypes import compute_view

Values = dict[str, np.ndarray]


def _erf(x: np.ndarray) -> np.ndarray:
    # numpy has no erf; Abramowitz & Stegun 7.1.26, |error| < 1.5e-7, below fp32 resolution of gelu.
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
                                                        + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


ACTIVATION_FUNCS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda x: x,
    "copy": lambda x: x,
    "exp": np.exp,
    "log": np.log,
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),
    "gelu_apprx_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x**3))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "reciprocal": lambda x: 1.0 / x,
    "square": np.square,
    "abs": np.abs,
}


def _as(x: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Comparison results are 1/0 in the compute type of their operands."""
    dtype = np.result_type(like) if isinstance(like, np.ndarray) else np.float32
    return x.astype(dtype)


def _power(a, b):
    """numpy refuses negative integer powers of integers; the engines compute them as floats
    (2 ** -1 = 0.5, rounded on write)."""
    if np.issubdtype(np.result_type(a, b), np.integer):
        return np.float_power(a, b)
    return np.power(a, b)


ALU: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "divide": np.divide,
    "max": np.maximum,
    "min": np.minimum,
    "pow": _power,
    "abs_max": lambda a, b: np.maximum(np.abs(a), np.abs(b)),
    "bypass": lambda a, b: a + 0 * b,  # passes `a`, broadcast to the operand shapes
    "is_equal": lambda a, b: _as(a == b, a),
    "not_equal": lambda a, b: _as(a != b, a),
    "is_ge": lambda a, b: _as(a >= b, a),
    "is_gt": lambda a, b: _as(a > b, a),
    "is_le": lambda a, b: _as(a <= b, a),
    "is_lt": lambda a, b: _as(a < b, a),
    "bitwise_and": np.bitwise_and,
    "bitwise_or": np.bitwise_or,
    "bitwise_xor": np.bitwise_xor,
    "logical_shift_left": np.left_shift,
    "logical_shift_right": np.right_shift,
}
BITWISE_ALU = frozenset(
    {"bitwise_and", "bitwise_or", "bitwise_xor", "logical_shift_left", "logical_shift_right"})

REDUCERS: dict[str, Callable[..., np.ndarray]] = {"add": np.sum, "max": np.max, "min": np.min}

AFFINE_COMPARISONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ge": lambda v: v >= 0, "gt": lambda v: v > 0, "le": lambda v: v <= 0,
    "lt": lambda v: v < 0, "eq": lambda v: v == 0, "ne": lambda v: v != 0,
}


def _flat(x: np.ndarray) -> np.ndarray:
    """[P, *free] -> [P, F] in the compute type."""
    return compute_view(x).reshape(x.shape[0], -1)


def _operand(instr, ins: Values, name: str, integer: bool = False):
    """An immediate scalar from the record, or a per-partition [P, 1] tile that was read.

    Immediates are stored as float; a bitwise op (`integer`) takes them as int64, from the record's
    value rather than through fp32, which would round masks wider than 24 bits.
    """
    if name in ins:
        return _flat(ins[name])
    value = getattr(instr, name)
    if integer:
        return np.int64(value)
    return np.float32(value) if isinstance(value, float) else value


def _alu(op: str, a, b):
    """One ALU op.  Integer tiles can carry a fractional intermediate into a second op (an int
    plus a float immediate, a division): a bitwise op takes its operands rounded half to even,
    as an integer write would."""
    if op in BITWISE_ALU:
        a, b = (x if np.issubdtype(np.result_type(x), np.integer)
                else np.rint(x).astype(np.int64) for x in (a, b))
    return ALU[op](a, b)


def _apply(op: str, data, operand, reverse: bool):
    return _alu(op, operand, data) if reverse else _alu(op, data, operand)


def _affine(instr, shape: tuple[int, ...]) -> np.ndarray:
    """base + channel_multiplier * p + sum_j steps[j] * i_j over a [P, *free] grid."""
    grids = np.indices(shape, dtype=np.int64)
    value = instr.base + instr.channel_multiplier * grids[0]
    for step, grid in zip(instr.steps, grids[1:]):
        value = value + step * grid
    return value


# ---- one function per opcode -----------------------------------------------------------------
def dma_copy(instr, ins: Values) -> Values:
    # dst takes src's elements in row-major order: the write reshapes them to dst's shape
    # (without a copy when the shapes already agree).
    return {"dst": ins["src"]}


def matmul(instr, ins: Values) -> Values:
    stationary = _flat(ins["stationary"])  # float operands: fp32 views or copies
    moving = _flat(ins["moving"])
    product = stationary.T @ moving  # fp32 multiply, fp32 accumulate (PSUM)
    if instr.accumulate:
        product += _flat(ins["dst"])
    return {"dst": product}


def transpose(instr, ins: Values) -> Values:
    return {"dst": _flat(ins["src"]).T}


def activation(instr, ins: Values) -> Values:
    data = _flat(ins["src"]).astype(np.float32)
    pre = data * _operand(instr, ins, "scale")
    if instr.bias is not None:
        pre = pre + _flat(ins["bias"])
    with np.errstate(all="ignore"):  # the hardware returns inf/NaN without trapping
        out = ACTIVATION_FUNCS[instr.func](pre).astype(np.float32)
    result = {"dst": out}
    if instr.reduce is not None:
        result["reduce"] = out.sum(axis=1, keepdims=True, dtype=np.float32)
    return result


def tensor_tensor(instr, ins: Values) -> Values:
    with np.errstate(all="ignore"):
        return {"dst": ALU[instr.op](_flat(ins["in0"]), _flat(ins["in1"]))}


def tensor_scalar(instr, ins: Values) -> Values:
    with np.errstate(all="ignore"):
        out = _apply(instr.op0, _flat(ins["src"]),
                     _operand(instr, ins, "operand0", instr.op0 in BITWISE_ALU), instr.reverse0)
        if instr.op1 is not None:
            out = _apply(instr.op1, out,
                         _operand(instr, ins, "operand1", instr.op1 in BITWISE_ALU),
                         instr.reverse1)
    return {"dst": out}


def tensor_reduce(instr, ins: Values) -> Values:
    data = compute_view(ins["src"])
    out = REDUCERS[instr.op](data, axis=instr.axes)
    return {"dst": -out if instr.negate else out}


def tensor_copy(instr, ins: Values) -> Values:
    return {"dst": ins["src"]}


def tensor_tensor_scan(instr, ins: Values) -> Values:
    in0, in1 = _flat(ins["in0"]), _flat(ins["in1"])
    carry = _operand(instr, ins, "initial")
    carry = np.broadcast_to(np.asarray(carry, in0.dtype), (in0.shape[0], 1)).reshape(-1)
    columns = []
    with np.errstate(all="ignore"):
        for i in range(in0.shape[1]):  # the recurrence is sequential along the free axis
            carry = _alu(instr.op1, _alu(instr.op0, in0[:, i], carry), in1[:, i])
            columns.append(carry)
    # Stacked in the carry's own type: a fractional carry on integer tiles reaches the write
    # port's rounding instead of being truncated here.
    return {"dst": np.stack(columns, axis=1)}


def memset(instr, ins: Values) -> Values:
    return {"dst": np.full(instr.dst.shape, instr.value, dtype=np.float64)}


def iota(instr, ins: Values) -> Values:
    return {"dst": _affine(instr, instr.dst.shape)}


def affine_select(instr, ins: Values) -> Values:
    data = compute_view(ins["src"])
    keep = AFFINE_COMPARISONS[instr.cmp](_affine(instr, data.shape))
    # float64 holds every int32 and fp32 value exactly, so the fill reaches the write port's
    # rounding (nearest even, saturating) like any computed value instead of being truncated.
    return {"dst": np.where(keep, data, np.float64(instr.fill))}


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    count = np.full((x.shape[0],), x.shape[1], np.float32)
    if x.shape[1] == 0:
        zero = np.zeros((x.shape[0],), np.float32)
        return count, zero, zero
    mean = x.mean(axis=1, dtype=np.float32)
    m2 = np.square(x - mean[:, None]).sum(axis=1, dtype=np.float32)
    return count, mean, m2


def bn_stats(instr, ins: Values) -> Values:
    data = _flat(ins["src"]).astype(np.float32)
    half = (data.shape[1] + 1) // 2
    triples = [*_moments(data[:, :half]), *_moments(data[:, half:])]
    return {"dst": np.stack(triples, axis=1)}


def bn_aggr(instr, ins: Values) -> Values:
    stats = _flat(ins["src"]).astype(np.float64).reshape(ins["src"].shape[0], -1, 3)
    count, mean, m2 = stats[..., 0], stats[..., 1], stats[..., 2]
    total = count.sum(axis=1)
    safe = np.where(total > 0, total, 1.0)
    grand = (count * mean).sum(axis=1) / safe
    # Chan et al.'s parallel variance: within-group M2 plus between-group spread.
    spread = m2.sum(axis=1) + (count * np.square(mean - grand[:, None])).sum(axis=1)
    return {"dst": np.stack([grand, spread / safe], axis=1).astype(np.float32)}


def reciprocal(instr, ins: Values) -> Values:
    with np.errstate(all="ignore"):
        return {"dst": np.float32(1.0) / _flat(ins["src"]).astype(np.float32)}


def no_values(instr, ins: Values) -> Values:
    """Synchronisation instructions move no data."""
    return {}


# ---- collectives: one call for the whole group, participants in rank-list order --------------
def _reduce_stack(op: str, blocks: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack([compute_view(b).reshape(-1) for b in blocks])
    return REDUCERS[op](stacked, axis=0)


def all_reduce(instrs: list, ins: list[Values]) -> list[Values]:
    total = _reduce_stack(instrs[0].op, [x["src"] for x in ins])
    return [{"dst": total} for _ in instrs]


def all_gather(instrs: list, ins: list[Values]) -> list[Values]:
    gathered = np.concatenate([x["src"].reshape(-1) for x in ins])
    return [{"dst": gathered} for _ in instrs]


def reduce_scatter(instrs: list, ins: list[Values]) -> list[Values]:
    total = _reduce_stack(instrs[0].op, [x["src"] for x in ins])
    return [{"dst": block} for block in np.split(total, len(instrs))]


def send_recv(instrs: list, ins: list[Values]) -> list[Values]:
    """A matched pair, sender first: the receiver's dst gets the sender's src."""
    return [{}, {"dst": ins[0]["src"].reshape(-1)}]
