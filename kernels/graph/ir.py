"""The operator-graph IR: operators as nodes of a networkx MultiDiGraph, tensors as edges.

A node holds its `Operator` record (op name + attributes checked against `ops.OPS`), the types of
its outputs, the layer it belongs to (for pipeline partitioning) and the annotations passes attach
(layout, working set, HBM slot, partition).  An edge u -> v with key `k` carries output `port` of u
into input `k` of v, with its `TensorType`.  Graph inputs are `input` nodes fed by the caller;
weights are `constant` nodes whose values the graph holds (arrays, or seeded random weights made
lazily on first use, so large models build in a moment).  Outputs are named references.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import networkx as nx
import numpy as np

from isa.dtypes import DType, dtype, from_numpy
from kernels.graph.ops import OPS, Operator
from kernels.graph.tensor import GraphError, TensorType, Value

INITS = ("normal", "uniform", "zeros", "ones")


@dataclass(frozen=True)
class RandomInit:
    """A weight generated on first use: `offset + scale * noise`, the noise standard normal or
    uniform in [-1, 1) from a generator seeded by (seed, crc32 of the name), so two graphs built
    with the same seed and names hold the same weights; "zeros" and "ones" ignore scale/offset."""

    kind: str
    scale: float
    seed: int
    offset: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in INITS:
            raise GraphError(f"weight init {self.kind!r} must be one of {INITS}")
        if not self.scale >= 0:
            raise GraphError(f"weight init scale {self.scale!r} must be >= 0")

    def materialize(self, name: str, t: TensorType) -> np.ndarray:
        if not t.dtype.is_float and self.kind in ("normal", "uniform"):
            raise GraphError(f"random {self.kind} weights need a float dtype, not {t.dtype}", name)
        if self.kind in ("zeros", "ones"):
            return np.full(t.shape, 0 if self.kind == "zeros" else 1,
                           np.float32 if t.dtype.is_float else t.dtype.storage)
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
        if self.kind == "normal":
            values = rng.standard_normal(t.shape, dtype=np.float32)
        else:
            values = rng.random(t.shape, dtype=np.float32) * 2.0 - 1.0
        values *= np.float32(self.scale)
        if self.offset:
            values += np.float32(self.offset)
        return values

    def __str__(self) -> str:
        if self.kind in ("zeros", "ones"):
            return self.kind
        shift = f"{self.offset:g} + " if self.offset else ""
        return f"{shift}{self.scale:g} * {self.kind}(seed={self.seed})"


def _frozen(values: np.ndarray, copy: bool = True) -> np.ndarray:
    if copy:
        values = np.array(values)  # a private copy the caller cannot change behind our back
    values.flags.writeable = False
    return values


class Graph:
    """An operator graph; build it with `input`, `weight`/`constant`, `apply` and `output`."""

    def __init__(self, name: str = "graph", seed: int = 0):
        self.name = name
        self.seed = seed
        self.nx = nx.MultiDiGraph()
        self.outputs: dict[str, Value] = {}
        self.meta: dict[str, object] = {}  # graph-level results of passes (HBM summary, ...)
        self._constants: dict[str, np.ndarray | RandomInit] = {}
        self._cache: dict[str, np.ndarray] = {}
        self._seq = 0
        self._scopes: list[str] = []

    # ---- building ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Prefix node ids with `name/`; the outermost scope is the nodes' layer."""
        if not name or "/" in name:
            raise GraphError(f"scope name {name!r} must be non-empty without '/'")
        self._scopes.append(name)
        try:
            yield
        finally:
            self._scopes.pop()

    def _node_id(self, base: str, explicit: bool) -> str:
        prefix = "".join(s + "/" for s in self._scopes)
        node = prefix + base
        if explicit:
            if node in self.nx:
                raise GraphError("a node with this id already exists", node)
            return node
        k = 0
        while node in self.nx:
            k += 1
            node = f"{prefix}{base}_{k}"
        return node

    def _add(self, node: str, op: Operator, inputs: Sequence[Value]) -> None:
        types = self._infer(node, op, inputs)
        self.nx.add_node(node, op=op, types=types, seq=self._seq,
                         layer=self._scopes[0] if self._scopes else None, ann={})
        self._seq += 1
        for k, v in enumerate(inputs):
            self.nx.add_edge(v.node, node, key=k, port=v.port, type=self.type_of(v))

    def _infer(self, node: str, op: Operator, inputs: Sequence[Value]) -> tuple[TensorType, ...]:
        spec = OPS[op.op]
        try:
            spec.check_arity(len(inputs))
            in_types = tuple(self.type_of(v) for v in inputs)
            types = spec.infer(op, in_types)
        except GraphError as err:
            raise GraphError(f"({op.op}) {err}", node) from None
        if len(types) != spec.outputs(op):
            raise GraphError(f"({op.op}) inference gave {len(types)} outputs, the op declares "
                             f"{spec.outputs(op)}", node)
        return tuple(types)

    def input(self, name: str, shape: Sequence[int], dtype: str | DType = "fp32") -> Value:
        """A graph input the caller feeds by `name` (ids of inputs ignore scopes)."""
        if name in self.nx:
            raise GraphError("a node with this id already exists", name)
        self._add(name, Operator("input", {"shape": tuple(shape), "dtype": dtype}), ())
        return Value(name)

    def constant(self, value: np.ndarray, name: str | None = None,
                 dtype: str | DType | None = None) -> Value:
        """A constant holding `value` (float arrays are held as fp32, cast when evaluated)."""
        value = np.asarray(value)
        dt = from_numpy(value.dtype) if dtype is None else _dtype(dtype)
        node = self._node_id(name or "const", explicit=name is not None)
        stored = value.astype(np.float32 if dt.is_float else dt.storage)
        self._add(node, Operator("constant", {"shape": value.shape, "dtype": dt}), ())
        self._constants[node] = _frozen(stored)
        return Value(node)

    def weight(self, name: str, shape: Sequence[int], dtype: str | DType = "fp32",
               scale: float = 0.02, init: str = "normal", offset: float = 0.0) -> Value:
        """A seeded random weight `offset + scale * noise`, generated on first use (default
        normal with standard deviation 0.02, the BERT / GPT-2 initialiser)."""
        node = self._node_id(name, explicit=True)
        init_spec = RandomInit(init, float(scale), self.seed, float(offset))
        self._add(node, Operator("constant", {"shape": tuple(shape), "dtype": dtype}), ())
        self._constants[node] = init_spec
        return Value(node)

    def apply(self, op: str, *inputs: Value, name: str | None = None,
              **attrs: object) -> Value | tuple[Value, ...]:
        """Add operator `op` on `inputs`; its output Value (a tuple for multi-output ops)."""
        node = self._node_id(name or op, explicit=name is not None)
        try:
            record = Operator(op, attrs)
        except GraphError as err:
            raise GraphError(str(err), node) from None
        if OPS[op].reference is None:
            raise GraphError(f"{op} is a source; use Graph.input/constant/weight", node)
        for v in inputs:
            if not isinstance(v, Value):
                raise GraphError(f"({op}) inputs must be Values, got {v!r}", node)
        self._add(node, record, inputs)
        outs = tuple(Value(node, p) for p in range(len(self.types(node))))
        return outs[0] if len(outs) == 1 else outs

    def output(self, name: str, value: Value) -> None:
        if name in self.outputs:
            raise GraphError(f"output {name!r} is already defined")
        self.type_of(value)
        self.outputs[name] = value

    # ---- reading ----------------------------------------------------------------------------
    def __contains__(self, node: str) -> bool:
        return node in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def _data(self, node: str) -> dict:
        try:
            return self.nx.nodes[node]
        except KeyError:
            raise GraphError("no such node", node) from None

    @property
    def nodes(self) -> list[str]:
        """Node ids in a deterministic topological order (creation order breaks ties)."""
        try:
            return list(nx.lexicographical_topological_sort(
                self.nx, key=lambda n: self.nx.nodes[n].get("seq", -1)))
        except nx.NetworkXUnfeasible:
            cycle = " -> ".join(str(u) for u, *_ in nx.find_cycle(self.nx))
            raise GraphError(f"the graph has a cycle: {cycle}") from None

    def op(self, node: str) -> Operator:
        return self._data(node)["op"]

    def types(self, node: str) -> tuple[TensorType, ...]:
        return self._data(node)["types"]

    def type_of(self, value: Value) -> TensorType:
        types = self.types(value.node)
        if value.port >= len(types):
            raise GraphError(f"has {len(types)} outputs; output {value.port} does not exist",
                             value.node)
        return types[value.port]

    def inputs(self, node: str) -> tuple[Value, ...]:
        """The node's input tensors in input order."""
        edges = sorted(self.nx.in_edges(node, keys=True, data="port"), key=lambda e: e[2])
        return tuple(Value(u, port) for u, _, _, port in edges)

    def input_types(self, node: str) -> tuple[TensorType, ...]:
        return tuple(self.type_of(v) for v in self.inputs(node))

    def consumers(self, value: Value) -> list[tuple[str, int]]:
        """(node, input index) of every use of `value`, in node creation order."""
        uses = [(v, k) for _, v, k, port in self.nx.out_edges(value.node, keys=True, data="port")
                if port == value.port]
        return sorted(uses, key=lambda use: (self.nx.nodes[use[0]]["seq"], use[1]))

    def output_names(self, value: Value) -> list[str]:
        return [name for name, v in self.outputs.items() if v == value]

    def layer(self, node: str) -> str | None:
        return self._data(node).get("layer")

    @property
    def graph_inputs(self) -> dict[str, TensorType]:
        """Input name -> type, in creation order."""
        return {n: self.types(n)[0] for n in self._by_seq() if self.op(n).op == "input"}

    def _by_seq(self) -> list[str]:
        return sorted(self.nx.nodes, key=lambda n: self.nx.nodes[n].get("seq", -1))

    def constants(self) -> list[str]:
        return [n for n in self._by_seq() if self.op(n).op == "constant"]

    def is_constant(self, value: Value) -> bool:
        return self.op(value.node).op == "constant"

    def constant_source(self, node: str) -> np.ndarray | RandomInit:
        try:
            return self._constants[node]
        except KeyError:
            raise GraphError("is not a constant held by the graph", node) from None

    def constant_value(self, node: str) -> np.ndarray:
        """The value of a constant (fp32 for float constants), generated on first use."""
        if node in self._cache:
            return self._cache[node]
        source = self.constant_source(node)
        if isinstance(source, RandomInit):
            value = _frozen(source.materialize(node, self.types(node)[0]), copy=False)
            self._cache[node] = value
            return value
        return source

    def flops(self, node: str) -> int:
        op = self.op(node)
        return OPS[op.op].flops(op, self.input_types(node), self.types(node))

    def total_flops(self) -> int:
        return sum(self.flops(n) for n in self.nx.nodes)

    def annotations(self, node: str) -> Mapping[str, object]:
        return MappingProxyType(self._data(node)["ann"])

    def annotate(self, node: str, key: str, value: object) -> None:
        self._data(node)["ann"][key] = value

    def set_layout(self, node: str, **params: int) -> None:
        """Ask the layout pass for these tile parameters on `node` (checked against the node's
        tiling now, and against the target by the layout and budget passes)."""
        from kernels.graph.layout import check_request  # layout reads the IR; import when used
        check_request(self, node, params)
        request = dict(self._data(node)["ann"].get("layout_request", {}))
        request.update(params)
        self.annotate(node, "layout_request", MappingProxyType(request))

    # ---- editing (for passes; each keeps the graph consistent) ------------------------------
    def add_constant(self, node: str, value: np.ndarray, dt: DType,
                     layer: str | None = None) -> Value:
        """Add a constant node with an explicit id holding `value` in type `dt`."""
        if node in self.nx:
            raise GraphError("a node with this id already exists", node)
        value = np.asarray(value)
        self._add(node, Operator("constant", {"shape": value.shape, "dtype": dt}), ())
        self.nx.nodes[node]["layer"] = layer
        self._constants[node] = _frozen(value.astype(np.float32 if dt.is_float else dt.storage))
        return Value(node)

    def set_op(self, node: str, op: Operator, inputs: Sequence[Value]) -> None:
        """Give `node` a new operator and inputs, keeping its id, uses and annotations."""
        old_types = self.types(node)
        types = self._infer(node, op, inputs)
        for _, v, k, port in list(self.nx.out_edges(node, keys=True, data="port")):
            if port >= len(types) or types[port] != old_types[port]:
                raise GraphError(f"new operator {op.op} changes output {port}, which "
                                 f"{v} (input {k}) uses", node)
        self.nx.remove_edges_from(list(self.nx.in_edges(node, keys=True)))
        self.nx.nodes[node]["op"] = op
        self.nx.nodes[node]["types"] = types
        for k, v in enumerate(inputs):
            self.nx.add_edge(v.node, node, key=k, port=v.port, type=self.type_of(v))

    def retype(self, node: str, types: tuple[TensorType, ...]) -> None:
        """Record new output types of `node` (and on its outgoing edges), unchecked: the
        inference pass and `check` decide whether they are consistent."""
        self._data(node)["types"] = tuple(types)
        for _, _, _, data in self.nx.out_edges(node, keys=True, data=True):
            data["type"] = types[data["port"]]

    def replace_uses(self, old: Value, new: Value) -> None:
        """Make every consumer and output of `old` use `new` instead."""
        if self.type_of(old) != self.type_of(new):
            raise GraphError(f"cannot replace {old} ({self.type_of(old)}) by {new} "
                             f"({self.type_of(new)}): types differ", old.node)
        for v, k in self.consumers(old):
            self.nx.remove_edge(old.node, v, key=k)
            self.nx.add_edge(new.node, v, key=k, port=new.port, type=self.type_of(new))
        for name, value in self.outputs.items():
            if value == old:
                self.outputs[name] = new

    def remove(self, node: str) -> None:
        """Remove a node nobody uses."""
        if self.nx.out_degree(node) or any(v.node == node for v in self.outputs.values()):
            raise GraphError("cannot be removed: it is still used", node)
        self.nx.remove_node(node)
        self._constants.pop(node, None)
        self._cache.pop(node, None)

    def with_input(self, name: str, shape: Sequence[int], dt: str | DType | None = None) -> Graph:
        """A copy whose input `name` has a new shape (and dtype); other types are stale until
        the inference pass re-infers them."""
        g = self.copy()
        if name not in g.graph_inputs:
            raise GraphError("is not a graph input", name)
        old = g.types(name)[0]
        g._data(name)["op"] = Operator("input", {"shape": tuple(shape),
                                                 "dtype": old.dtype if dt is None else dt})
        g.retype(name, (TensorType(tuple(shape), old.dtype if dt is None else _dtype(dt)),))
        return g

    def copy(self) -> Graph:
        g = Graph(self.name, self.seed)
        g.nx = self.nx.copy()
        for node in g.nx.nodes:
            g.nx.nodes[node]["ann"] = dict(self.nx.nodes[node]["ann"])
        g.outputs = dict(self.outputs)
        g.meta = dict(self.meta)
        g._constants = dict(self._constants)
        g._cache = dict(self._cache)
        g._seq = self._seq
        return g

    # ---- printing and dumping ---------------------------------------------------------------
    def format_node(self, node: str, width: int = 0) -> str:
        op = self.op(node)
        outs = ", ".join(str(t) for t in self.types(node))
        if op.op == "constant":
            source = self._constants.get(node)
            head = f"constant<{source if isinstance(source, RandomInit) else 'array'}>"
        elif op.op == "input":
            head = "input"
        else:
            attrs = op.format_attrs()
            args = ", ".join(f"{v}: {self.type_of(v)}" for v in self.inputs(node))
            head = f"{op.op}{f'[{attrs}]' if attrs else ''}({args})"
        ann = self._data(node)["ann"]
        notes = "  # " + "; ".join(f"{k} {_short(v)}" for k, v in ann.items()) if ann else ""
        return f"{node:<{width}} = {head} -> {outs}{notes}"

    def format(self) -> str:
        """One line per node (id = op[attrs](inputs: types) -> output types  # annotations)."""
        order = self.nodes
        width = max((len(n) for n in order), default=0)
        lines = [f"graph {self.name}: {len(order)} nodes, inputs "
                 f"{', '.join(self.graph_inputs) or '-'}"]
        lines += ["  " + self.format_node(n, width) for n in order]
        lines += [f"  output {name} = {v}: {self.type_of(v)}" for name, v in self.outputs.items()]
        lines += [f"  meta {k}: {_short(v)}" for k, v in self.meta.items()]
        return "\n".join(lines)

    __str__ = format

    def to_json(self) -> dict:
        """A JSON-ready description of the graph (constant values are described, not dumped)."""
        nodes = []
        for node in self.nodes:
            op = self.op(node)
            entry = {"id": node, "op": op.op, "attrs": to_json(dict(op.attrs)),
                     "inputs": [str(v) for v in self.inputs(node)],
                     "outputs": [t.to_json() for t in self.types(node)],
                     "layer": self.layer(node), "flops": self.flops(node),
                     "annotations": to_json(dict(self._data(node)["ann"]))}
            if op.op == "constant":
                source = self._constants.get(node)
                entry["init"] = (to_json(source) if isinstance(source, RandomInit)
                                 else "array")
            nodes.append(entry)
        return {"name": self.name, "seed": self.seed,
                "inputs": {n: t.to_json() for n, t in self.graph_inputs.items()},
                "outputs": {n: str(v) for n, v in self.outputs.items()},
                "nodes": nodes, "meta": to_json(self.meta)}

    def dumps(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_json(), indent=indent)


def _dtype(value: str | DType) -> DType:
    try:
        return dtype(value)
    except (TypeError, ValueError) as err:
        raise GraphError(str(err)) from None


def to_json(value: object) -> object:
    """Records, tuples, mappings, dtypes and numpy scalars as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"record": type(value).__name__}
        out.update({f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return out
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    if isinstance(value, DType):
        return value.name
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _short(value: object) -> str:
    if isinstance(value, tuple):
        return ", ".join(_short(v) for v in value)
    if isinstance(value, Mapping):
        return "(" + ", ".join(f"{k}={v}" for k, v in value.items()) + ")"
    return str(value)
