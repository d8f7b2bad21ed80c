"""The values an operator graph passes around: tensor types, references to tensors, and errors.

A tensor is output `port` of a node (`Value`); its type is a frozen `TensorType` (shape and one
of the `isa.dtypes` element types).  Every graph error is a `GraphError` whose message starts with
the node it is about, so a failing pass or check points at the operator to look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from numbers import Integral

from isa.dtypes import DType, dtype


class GraphError(ValueError):
    """An illegal graph, operator or annotation; `node` is the offending node's id (or None)."""

    def __init__(self, message: str, node: str | None = None):
        super().__init__(message if node is None else f"node {node}: {message}")
        self.node = node

    def prefixed(self, context: str) -> GraphError:
        """The same error (same node) with `context: ` in front of its message."""
        err = GraphError(f"{context}: {self}")
        err.node = self.node
        return err


@dataclass(frozen=True)
class TensorType:
    """The shape and element type of one tensor (an edge of the graph)."""

    shape: tuple[int, ...]
    dtype: DType

    def __post_init__(self) -> None:
        if not isinstance(self.shape, (tuple, list)):
            raise GraphError(f"tensor shape {self.shape!r} must be a tuple of ints")
        shape = tuple(self.shape)
        for dim in shape:
            if isinstance(dim, bool) or not isinstance(dim, Integral):
                raise GraphError(f"tensor shape {shape!r}: dimension {dim!r} is not an int")
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise GraphError(f"tensor shape {shape!r} has a negative dimension")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", dtype(self.dtype))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def with_shape(self, shape: tuple[int, ...]) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def __str__(self) -> str:
        return f"{self.dtype.name}[{','.join(str(d) for d in self.shape)}]"

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype.name}


@dataclass(frozen=True)
class Value:
    """A reference to a tensor: output `port` of node `node`."""

    node: str
    port: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.node, str) or not self.node:
            raise GraphError(f"Value node {self.node!r} must be a non-empty node id")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or self.port < 0:
            raise GraphError(f"Value port {self.port!r} must be an int >= 0", self.node)

    def __str__(self) -> str:
        return self.node if self.port == 0 else f"{self.node}:{self.port}"
