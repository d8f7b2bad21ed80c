"""ONNX import: read a model (`onnx.load`) into the graph IR, one converter per ONNX operator.

Supported (default domain): MatMul, Gemm, Add, Sub, Mul, Div, Relu, Gelu, Erf, Tanh, Sigmoid,
Exp, Softmax, LayerNormalization (last axis), Conv and MaxPool/AveragePool (2-D), Global-
AveragePool, Reshape, Transpose, Concat, Split, Slice, Gather, Flatten, Squeeze, Unsqueeze,
Identity and Constant.  Initializers become constants; shape-like operands (Reshape's shape,
Slice's starts/ends, Split's sizes, Squeeze/Unsqueeze axes) must be constants.  int64 tensors
are held as int32 (the device's widest integer; an int64 constant outside its range, such as
Slice's "to the end" INT64_MAX, may only be a shape operand) and float64 as fp32.  A model
with operators outside this set raises one error listing all of them with their counts.
`onnx` is an optional dependency, imported when this module is used.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from math import prod
from typing import Any

import numpy as np

from isa.dtypes import from_numpy
from kernels.graph.ir import Graph
from kernels.graph.ops import resolve_shape
from kernels.graph.tensor import GraphError, Value


class OnnxImportError(GraphError):
    """A model this importer cannot represent; the message says what and where."""


def _require_onnx() -> Any:
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401  (submodule used through `onnx`)
    except ImportError as err:
        raise ImportError("ONNX import needs the optional dependency `onnx`: "
                          "pip install 'onnx>=1.15' (the `onnx` extra of ncemu)") from err
    return onnx


class _Importer:
    """The state of one import: the graph, ONNX tensor name -> Value, and the opset."""

    def __init__(self, onnx: Any, model: Any, graph: Graph):
        self.onnx = onnx
        self.g = graph
        self.env: dict[str, Value] = {}
        self.raw: dict[str, np.ndarray] = {}  # initializers and Constant outputs, as stored
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          1)

    # ---- helpers -------------------------------------------------------------------------------
    def attr(self, node: Any, name: str, default: object = None) -> object:
        for a in node.attribute:
            if a.name == name:
                value = self.onnx.helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def fresh(self, base: str) -> str:
        name, k = base or "node", 0
        while name in self.g:
            k += 1
            name = f"{base}_{k}"
        return name

    def value(self, node: Any, index: int) -> Value | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name in self.raw and name not in self.env:
            raise OnnxImportError(f"{node.op_type} {node.name!r}: int64 tensor {name!r} holds "
                                  "values outside int32 and can only be a shape operand")
        if name not in self.env:
            raise OnnxImportError(f"{node.op_type} {node.name!r}: input {name!r} is not defined "
                                  "before it is used")
        return self.env[name]

    def inputs(self, node: Any) -> list[Value]:
        return [v for i in range(len(node.input)) if (v := self.value(node, i)) is not None]

    def const(self, node: Any, index: int, what: str) -> np.ndarray | None:
        """The value of a constant input (shape operands), or None if the input is absent."""
        if index < len(node.input) and node.input[index] in self.raw:
            return self.raw[node.input[index]]
        v = self.value(node, index)
        if v is None:
            return None
        if not self.g.is_constant(v):
            raise OnnxImportError(f"{node.op_type} {node.name!r}: {what} must be a constant "
                                  "(initializer or Constant), not computed")
        return np.asarray(self.g.constant_value(v.node))

    def add_constant(self, name: str, array: np.ndarray) -> Value:
        array = np.asarray(array)
        if array.dtype == np.int64:
            array = array.astype(np.int32)
        return self.g.add_constant(self.fresh(name), array, from_numpy(array.dtype))

    def define_constant(self, name: str, array: np.ndarray) -> None:
        """An initializer or Constant output: kept as stored for shape operands, and a graph
        constant unless it is int64 outside int32 (only usable as a shape operand then)."""
        array = _host_array(np.asarray(array), name)
        self.raw[name] = array
        info = np.iinfo(np.int32)
        if array.dtype == np.int64 and array.size and (array.min() < info.min
                                                       or array.max() > info.max):
            return
        self.env[name] = self.add_constant(name, array)

    def apply(self, node: Any, op: str, *inputs: Value, **attrs: object) -> Value:
        try:
            return self.g.apply(op, *inputs, name=self.fresh(node.name or node.output[0]),
                                **attrs)
        except GraphError as err:
            raise OnnxImportError(f"{node.op_type} {node.name!r}: {err}") from None

    def shape(self, v: Value) -> tuple[int, ...]:
        return self.g.type_of(v).shape


def _onnx_pads(imp: _Importer, node: Any, spatial: Sequence[int], kernel: Sequence[int],
               strides: Sequence[int], dilations: Sequence[int]) -> tuple[int, int, int, int]:
    """ONNX pads [h_begin, w_begin, h_end, w_end] (or auto_pad) as (top, left, bottom, right)."""
    auto = imp.attr(node, "auto_pad", "NOTSET")
    if auto in ("NOTSET", "VALID"):
        pads = list(imp.attr(node, "pads", [0, 0, 0, 0]) if auto == "NOTSET" else [0, 0, 0, 0])
        if len(pads) != 4:
            raise OnnxImportError(f"{node.op_type} {node.name!r}: only 2-D pads are supported")
        return pads[0], pads[1], pads[2], pads[3]
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise OnnxImportError(f"{node.op_type} {node.name!r}: auto_pad {auto!r} is unknown")
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max(0, (-(-size // s) - 1) * s + d * (k - 1) + 1 - size)
        lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
        begin.append(lo)
        end.append(total - lo)
    return begin[0], begin[1], end[0], end[1]


# ---- converters ---------------------------------------------------------------------------------
Converter = Callable[[_Importer, Any], list[Value]]


def _matmul(imp: _Importer, node: Any) -> list[Value]:
    a, b = imp.inputs(node)
    ra, rb = len(imp.shape(a)), len(imp.shape(b))
    if rb == 2 and ra >= 1:
        return [imp.apply(node, "matmul", a, b)]
    if ra >= 2 and rb >= 2:
        return [imp.apply(node, "batch_matmul", a, b)]
    raise OnnxImportError(f"MatMul {node.name!r}: operands of rank {ra} and {rb} (1-D second "
                          "operands) are not supported")


def _gemm(imp: _Importer, node: Any) -> list[Value]:
    a, b = imp.value(node, 0), imp.value(node, 1)
    c = imp.value(node, 2)
    if imp.attr(node, "transA", 0):
        a = imp.apply(node, "transpose", a, perm=(1, 0))
    if imp.attr(node, "transB", 0):
        b = imp.apply(node, "transpose", b, perm=(1, 0))
    y = imp.apply(node, "matmul", a, b)
    alpha, beta = float(imp.attr(node, "alpha", 1.0)), float(imp.attr(node, "beta", 1.0))
    if alpha != 1.0:
        y = imp.apply(node, "mul", y, imp.add_constant(f"{node.name}.alpha", np.float32(alpha)))
    if c is not None and beta != 0.0:
        if beta != 1.0:
            c = imp.apply(node, "mul", c, imp.add_constant(f"{node.name}.beta", np.float32(beta)))
        y = imp.apply(node, "add", y, c)
    return [y]


def _same(op: str) -> Converter:
    return lambda imp, node: [imp.apply(node, op, *imp.inputs(node))]


def _gelu(imp: _Importer, node: Any) -> list[Value]:
    return [imp.apply(node, "gelu", imp.value(node, 0),
                      approximate=imp.attr(node, "approximate", "none"))]


def _softmax(imp: _Importer, node: Any) -> list[Value]:
    x = imp.value(node, 0)
    ndim = len(imp.shape(x))
    axis = int(imp.attr(node, "axis", -1 if imp.opset >= 13 else 1)) % ndim
    if imp.opset < 13 and axis != ndim - 1:
        raise OnnxImportError(f"Softmax {node.name!r}: opset {imp.opset} flattens from axis "
                              f"{axis}; only the last axis is supported")
    return [imp.apply(node, "softmax", x, axis=axis)]


def _layernorm(imp: _Importer, node: Any) -> list[Value]:
    x = imp.value(node, 0)
    ndim = len(imp.shape(x))
    if int(imp.attr(node, "axis", -1)) % ndim != ndim - 1:
        raise OnnxImportError(f"LayerNormalization {node.name!r}: only axis=-1 is supported")
    if any(node.output[1:]):
        raise OnnxImportError(f"LayerNormalization {node.name!r}: the Mean / InvStdDev outputs "
                              "are not supported")
    params = [imp.value(node, 1)] + ([imp.value(node, 2)] if imp.value(node, 2) else [])
    return [imp.apply(node, "layernorm", x, *params, eps=float(imp.attr(node, "epsilon", 1e-5)))]


def _conv(imp: _Importer, node: Any) -> list[Value]:
    x, w = imp.value(node, 0), imp.value(node, 1)
    if len(imp.shape(w)) != 4:
        raise OnnxImportError(f"Conv {node.name!r}: only 2-D convolutions are supported")
    kernel = imp.shape(w)[2:]
    strides = tuple(imp.attr(node, "strides", (1, 1)))
    dilations = tuple(imp.attr(node, "dilations", (1, 1)))
    pads = _onnx_pads(imp, node, imp.shape(x)[2:], kernel, strides, dilations)
    bias = [imp.value(node, 2)] if imp.value(node, 2) is not None else []
    return [imp.apply(node, "conv2d", x, w, *bias, stride=strides, padding=pads,
                      dilation=dilations, groups=int(imp.attr(node, "group", 1)))]


def _pool(op: str) -> Converter:
    def convert(imp: _Importer, node: Any) -> list[Value]:
        x = imp.value(node, 0)
        kernel = tuple(imp.attr(node, "kernel_shape"))
        strides = tuple(imp.attr(node, "strides", (1, 1)))
        if len(kernel) != 2:
            raise OnnxImportError(f"{node.op_type} {node.name!r}: only 2-D pooling is supported")
        unsupported = {"ceil_mode": 0, "storage_order": 0}
        for name, default in unsupported.items():
            if imp.attr(node, name, default) != default:
                raise OnnxImportError(f"{node.op_type} {node.name!r}: {name} != {default} is "
                                      "not supported")
        if tuple(imp.attr(node, "dilations", (1, 1))) != (1, 1) or any(node.output[1:]):
            raise OnnxImportError(f"{node.op_type} {node.name!r}: dilations and the Indices "
                                  "output are not supported")
        pads = _onnx_pads(imp, node, imp.shape(x)[2:], kernel, strides, (1, 1))
        extra = ({"count_include_pad": bool(imp.attr(node, "count_include_pad", 0))}
                 if op == "avgpool2d" else {})
        return [imp.apply(node, op, x, kernel=kernel, stride=strides, padding=pads, **extra)]
    return convert


def _reshape(imp: _Importer, node: Any) -> list[Value]:
    x = imp.value(node, 0)
    requested = [int(d) for d in imp.const(node, 1, "the shape")]
    if not imp.attr(node, "allowzero", 0):  # 0 copies the input's dim at that position
        requested = [imp.shape(x)[i] if d == 0 else d for i, d in enumerate(requested)]
    try:
        shape = resolve_shape(requested, prod(imp.shape(x)))
    except GraphError as err:
        raise OnnxImportError(f"Reshape {node.name!r}: {err}") from None
    return [imp.apply(node, "reshape", x, shape=shape)]


def _transpose(imp: _Importer, node: Any) -> list[Value]:
    x = imp.value(node, 0)
    perm = imp.attr(node, "perm", list(reversed(range(len(imp.shape(x))))))
    return [imp.apply(node, "transpose", x, perm=tuple(perm))]


def _concat(imp: _Importer, node: Any) -> list[Value]:
    return [imp.apply(node, "concat", *imp.inputs(node), axis=int(imp.attr(node, "axis")))]


def _split(imp: _Importer, node: Any) -> list[Value]:
    x = imp.value(node, 0)
    axis = int(imp.attr(node, "axis", 0))
    dim = imp.shape(x)[axis]
    sizes = imp.const(node, 1, "split") if imp.opset >= 13 else imp.attr(node, "split")
    if sizes is None:  # equal parts, one per output (the last smaller, opset 18)
        parts = len(node.output)
        chunk = -(-dim // parts)
        sizes = [chunk] * (parts - 1) + [dim - chunk * (parts - 1)]
    outs = imp.apply(node, "split", x, axis=axis, sizes=tuple(int(s) for s in sizes))
    return list(outs) if isinstance(outs, tuple) else [outs]


def _slice(imp: _Importer, node: Any) -> list[Value]:
    x = imp.value(node, 0)
    ndim = len(imp.shape(x))
    if imp.opset >= 10:
        starts, ends = imp.const(node, 1, "starts"), imp.const(node, 2, "ends")
        axes, steps = imp.const(node, 3, "axes"), imp.const(node, 4, "steps")
    else:
        starts, ends = imp.attr(node, "starts"), imp.attr(node, "ends")
        axes, steps = imp.attr(node, "axes"), None
    axes = list(range(len(starts))) if axes is None else [int(a) % ndim for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    if any(s < 1 for s in steps):
        raise OnnxImportError(f"Slice {node.name!r}: negative steps are not supported")
    return [imp.apply(node, "slice", x, starts=tuple(int(s) for s in starts),
                      ends=tuple(int(e) for e in ends), axes=tuple(axes), steps=tuple(steps))]


def _gather(imp: _Importer, node: Any) -> list[Value]:
    data, indices = imp.inputs(node)
    return [imp.apply(node, "gather", data, indices, axis=int(imp.attr(node, "axis", 0)))]


def _flatten(imp: _Importer, node: Any) -> list[Value]:
    x = imp.value(node, 0)
    shape = imp.shape(x)
    axis = int(imp.attr(node, "axis", 1)) % (len(shape) + 1)
    return [imp.apply(node, "reshape", x, shape=(prod(shape[:axis]), prod(shape[axis:])))]


def _squeeze_axes(imp: _Importer, node: Any, ndim: int) -> list[int] | None:
    axes = imp.const(node, 1, "axes") if imp.opset >= 13 else imp.attr(node, "axes")
    return None if axes is None else [int(a) % ndim for a in axes]


def _squeeze(imp: _Importer, node: Any) -> list[Value]:
    x = imp.value(node, 0)
    shape = imp.shape(x)
    axes = _squeeze_axes(imp, node, len(shape))
    axes = [i for i, d in enumerate(shape) if d == 1] if axes is None else axes
    if any(shape[a] != 1 for a in axes):
        raise OnnxImportError(f"Squeeze {node.name!r}: axes {axes} of {shape} are not all 1")
    return [imp.apply(node, "reshape", x, shape=tuple(d for i, d in enumerate(shape)
                                                      if i not in axes))]


def _unsqueeze(imp: _Importer, node: Any) -> list[Value]:
    x = imp.value(node, 0)
    shape = list(imp.shape(x))
    raw = imp.const(node, 1, "axes") if imp.opset >= 13 else imp.attr(node, "axes")
    out_ndim = len(shape) + len(raw)
    for axis in sorted(int(a) % out_ndim for a in raw):
        shape.insert(axis, 1)
    return [imp.apply(node, "reshape", x, shape=tuple(shape))]


def _identity(imp: _Importer, node: Any) -> list[Value]:
    return [imp.value(node, 0)]


def _constant(imp: _Importer, node: Any) -> list[Value]:
    for a in node.attribute:
        value = imp.onnx.helper.get_attribute_value(a)
        if a.name == "value":
            array = imp.onnx.numpy_helper.to_array(value)
        elif a.name in ("value_float", "value_floats"):
            array = np.asarray(value, np.float32)
        elif a.name in ("value_int", "value_ints"):
            array = np.asarray(value, np.int64)
        else:
            raise OnnxImportError(f"Constant {node.name!r}: attribute {a.name} is not supported")
        imp.define_constant(node.output[0], array)
        return []
    raise OnnxImportError(f"Constant {node.name!r} has no value")


CONVERTERS: dict[str, Converter] = {
    "MatMul": _matmul, "Gemm": _gemm,
    "Add": _same("add"), "Sub": _same("sub"), "Mul": _same("mul"), "Div": _same("div"),
    "Relu": _same("relu"), "Tanh": _same("tanh"), "Sigmoid": _same("sigmoid"),
    "Exp": _same("exp"), "Erf": _same("erf"), "Gelu": _gelu,
    "Softmax": _softmax, "LayerNormalization": _layernorm,
    "Conv": _conv, "MaxPool": _pool("maxpool2d"), "AveragePool": _pool("avgpool2d"),
    "GlobalAveragePool": _same("global_avgpool"),
    "Reshape": _reshape, "Transpose": _transpose, "Concat": _concat, "Split": _split,
    "Slice": _slice, "Gather": _gather, "Flatten": _flatten, "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze, "Identity": _identity, "Constant": _constant,
}


def _host_array(array: np.ndarray, name: str) -> np.ndarray:
    """An ONNX tensor as a host array of a device dtype (float64 -> fp32, bool -> uint8)."""
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    try:
        from_numpy(array.dtype)
    except ValueError:
        raise OnnxImportError(f"tensor {name!r} has dtype {array.dtype}, which the device does "
                              "not have") from None
    return array


def unsupported_operators(model: Any) -> Counter:
    """ONNX operators (domain:op or op) in `model` that no converter handles, with counts."""
    return Counter(node.op_type if node.domain in ("", "ai.onnx") else
                   f"{node.domain}:{node.op_type}"
                   for node in model.graph.node
                   if node.domain not in ("", "ai.onnx") or node.op_type not in CONVERTERS)


def load_onnx(model: str | os.PathLike | Any,
              input_shapes: Mapping[str, Sequence[int]] | None = None, seed: int = 0) -> Graph:
    """Import an ONNX model (a path, or a loaded ModelProto) as a Graph.

    `input_shapes` fixes the shape of inputs with symbolic dims (e.g. a dynamic batch).
    """
    onnx = _require_onnx()
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    missing = unsupported_operators(model)
    if missing:
        listing = ", ".join(f"{op} (x{n})" for op, n in sorted(missing.items()))
        raise OnnxImportError(f"model {model.graph.name!r} uses unsupported ONNX operators: "
                              f"{listing}; supported: {', '.join(sorted(CONVERTERS))}")
    shapes = dict(input_shapes or {})
    g = Graph(model.graph.name or "onnx", seed)
    imp = _Importer(onnx, model, g)
    initializers = {t.name for t in model.graph.initializer}
    for info in model.graph.input:
        if info.name in initializers:
            continue
        tensor_type = info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        shape = tuple(shapes.pop(info.name, dims))
        if any(d is None for d in shape):
            raise OnnxImportError(f"input {info.name!r} has symbolic dims {dims}; pass its shape "
                                  "in input_shapes")
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        imp.env[info.name] = g.input(info.name, shape, from_numpy(np_dtype))
    if shapes:
        raise OnnxImportError(f"input_shapes names {sorted(shapes)}, which are not inputs")
    for tensor in model.graph.initializer:
        imp.define_constant(tensor.name, onnx.numpy_helper.to_array(tensor))
    for node in model.graph.node:
        outs = CONVERTERS[node.op_type](imp, node)
        for name, value in zip(node.output, outs):
            if name:
                imp.env[name] = value
    for info in model.graph.output:
        if info.name not in imp.env:
            raise OnnxImportError(f"output {info.name!r} is never computed")
        g.output(info.name, imp.env[info.name])
    return g
