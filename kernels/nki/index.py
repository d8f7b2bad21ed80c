"""Index vectors of the legacy NKI API (neuronxcc.nki): `nl.arange`, `nl.mgrid`, their affine
arithmetic, and the predicates over them that `mask=` takes.

An index vector is an affine expression `const + sum(coef_d * i_d)` over the axes d of an index
space, a broadcast shape as in numpy: `nl.arange(128)[:, None]` is i_0 of a [128, 1] space (a
tile's partition axis), `nl.arange(512)[None, :]` is i_1 of a [1, 512] space (a free axis).
Indexing a tensor with such expressions (`a[i_p + 128 * m, i_f * 2]`) gives an affine view of it
(`NkiTensor.__getitem__`).  Products of two index vectors, `//` and `%` are not affine and raise.

A predicate compares an expression with a number or another expression (`i_p + 128 * m < n`);
`&` joins predicates into a mask.  `lanes_of` turns a mask into one contiguous range per axis of
the index space: a predicate over the partition axis shrinks the partitions an instruction
touches, one over a free axis shrinks that free range.  Predicates over two axes at once
(`i_p >= i_f`) and ranges with holes (`i_f != 3`) raise: they need `nisa.affine_select`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernels.nki.errors import NkiValidationError, UnsupportedConstructError

COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
    "eq": operator.eq, "ne": operator.ne,
}
_NEGATED = {"lt": "ge", "ge": "lt", "le": "gt", "gt": "le", "eq": "ne", "ne": "eq"}
SYMBOLS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy's broadcast of index-space shapes (right-aligned; sizes equal or 1)."""
    ndim = max(len(s) for s in shapes)
    result = [1] * ndim
    for shape in shapes:
        for axis, size in enumerate((1,) * (ndim - len(shape)) + tuple(shape)):
            if size != 1 and result[axis] not in (1, size):
                raise NkiValidationError(
                    f"index vectors of shapes {' and '.join(map(str, shapes))} do not broadcast "
                    f"(axis {axis}: {result[axis]} vs {size})")
            result[axis] = max(result[axis], size)
    return tuple(result)


@dataclass(frozen=True, eq=False)
class IndexExpr:
    """const + sum(coef * i_axis) over an index space of `shape` (eq=False: `==` and the other
    comparisons build predicates)."""

    shape: tuple[int, ...]
    terms: tuple[tuple[int, int], ...] = ()  # (axis, coefficient), sorted by axis
    const: int = 0

    # numpy scalars on the left (`np.int64(2) * i_f`) defer to our reflected operators.
    __array_ufunc__ = None

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        if not shape or any(n < 1 for n in shape):
            raise NkiValidationError(f"index space shape {shape} needs sizes >= 1")
        coefficients: dict[int, int] = {}
        for axis, coef in self.terms:
            if not 0 <= axis < len(shape):
                raise ValueError(f"index term on axis {axis} of a {len(shape)}-d space")
            if shape[axis] > 1:  # over a size-1 axis the index is always 0
                coefficients[axis] = coefficients.get(axis, 0) + int(coef)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "terms", tuple(sorted((a, c) for a, c in coefficients.items()
                                                       if c)))
        object.__setattr__(self, "const", int(self.const))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"index({self.formula()} over {list(self.shape)})"

    def formula(self) -> str:
        """`i0 + 128 - i1`-style text: i<axis> is the index along that axis of the space."""
        text = ""
        for axis, coef in self.terms:
            magnitude = "" if abs(coef) == 1 else f"{abs(coef)}*"
            sign = ("-" if coef < 0 else "") if not text else (" - " if coef < 0 else " + ")
            text += f"{sign}{magnitude}i{axis}"
        if self.const or not text:
            sign = ("-" if self.const < 0 else "") if not text else (
                " - " if self.const < 0 else " + ")
            text += f"{sign}{abs(self.const)}"
        return text

    # ---- shape --------------------------------------------------------------------------
    def aligned(self, shape: tuple[int, ...]) -> IndexExpr:
        """This expression in a broadcast space `shape` (axes right-aligned, as numpy)."""
        shift = len(shape) - self.ndim
        if shift < 0 or broadcast_shapes(self.shape, shape) != tuple(shape):
            raise NkiValidationError(f"{self!r} does not broadcast to the index space {shape}")
        return IndexExpr(tuple(shape), tuple((a + shift, c) for a, c in self.terms), self.const)

    def coefficient(self, axis: int) -> int:
        return dict(self.terms).get(axis, 0)

    def span(self) -> tuple[int, int]:
        """Lowest and highest value over the index space."""
        low = self.const + sum(min(0, c * (self.shape[a] - 1)) for a, c in self.terms)
        high = self.const + sum(max(0, c * (self.shape[a] - 1)) for a, c in self.terms)
        return low, high

    def __getitem__(self, key: Any) -> IndexExpr:
        """`[:, None]` / `[None, :]`: place the expression's axes in a larger index space."""
        items = key if isinstance(key, tuple) else (key,)
        if any(not (item is None or item == slice(None)) for item in items):
            raise UnsupportedConstructError(
                f"indexing an index vector with {key!r} (only None and : place its axes, "
                f"e.g. nl.arange(n)[:, None])")
        if sum(item is not None for item in items) != self.ndim:
            raise NkiValidationError(
                f"{key!r} must have one ':' per axis of the {self.ndim}-d index vector {self!r}")
        shape, new_axis, axis = [], {}, 0
        for item in items:
            if item is None:
                shape.append(1)
            else:
                new_axis[axis] = len(shape)
                shape.append(self.shape[axis])
                axis += 1
        return IndexExpr(tuple(shape), tuple((new_axis[a], c) for a, c in self.terms), self.const)

    # ---- affine arithmetic --------------------------------------------------------------
    def _combine(self, other: Any, sign: int, what: str) -> IndexExpr:
        if _is_int(other):
            return IndexExpr(self.shape, self.terms, self.const + sign * int(other))
        if isinstance(other, IndexExpr):
            shape = broadcast_shapes(self.shape, other.shape)
            a, b = self.aligned(shape), other.aligned(shape)
            return IndexExpr(shape, a.terms + tuple((x, sign * c) for x, c in b.terms),
                             a.const + sign * b.const)
        raise UnsupportedConstructError(f"index vector {what} {other!r} (ints and index vectors)")

    def __add__(self, other: Any) -> IndexExpr:
        return self._combine(other, 1, "+")

    __radd__ = __add__

    def __sub__(self, other: Any) -> IndexExpr:
        return self._combine(other, -1, "-")

    def __rsub__(self, other: Any) -> IndexExpr:
        return (-self)._combine(other, 1, "-")

    def __mul__(self, other: Any) -> IndexExpr:
        if not _is_int(other):
            raise UnsupportedConstructError(
                f"index vector {self!r} * {other!r}: only multiplication by an int is affine")
        factor = int(other)
        return IndexExpr(self.shape, tuple((a, c * factor) for a, c in self.terms),
                         self.const * factor)

    __rmul__ = __mul__

    def __neg__(self) -> IndexExpr:
        return self * -1

    def __pos__(self) -> IndexExpr:
        return self

    def _not_affine(self, what: str) -> Any:
        raise UnsupportedConstructError(
            f"index vector {what}: not an affine expression (use +, - and * by ints)")

    def __floordiv__(self, other: Any) -> Any:
        return self._not_affine("//")

    __rfloordiv__ = __truediv__ = __rtruediv__ = __floordiv__

    def __mod__(self, other: Any) -> Any:
        return self._not_affine("%")

    __rmod__ = __mod__

    def __index__(self) -> int:
        raise UnsupportedConstructError(
            f"{self!r} used as a Python int (an index vector is not a loop counter; loop with "
            f"nl.affine_range and index with the counter)")

    __int__ = __index__

    def __iter__(self) -> Iterator[Any]:
        raise UnsupportedConstructError(f"iterating over the index vector {self!r}")

    # ---- predicates ---------------------------------------------------------------------
    def _compare(self, other: Any, op: str) -> Any:
        if not (_is_int(other) or isinstance(other, IndexExpr)):
            return NotImplemented
        return Predicate(self - other, op)

    def __lt__(self, other: Any) -> Any:
        return self._compare(other, "lt")

    def __le__(self, other: Any) -> Any:
        return self._compare(other, "le")

    def __gt__(self, other: Any) -> Any:
        return self._compare(other, "gt")

    def __ge__(self, other: Any) -> Any:
        return self._compare(other, "ge")

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        return self._compare(other, "eq")

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        return self._compare(other, "ne")

    __hash__ = object.__hash__


def arange(*args: int) -> IndexExpr:
    """`nl.arange(stop)` / `nl.arange(start, stop[, step])`: a 1-d index vector."""
    if not 1 <= len(args) <= 3 or not all(_is_int(a) for a in args):
        raise NkiValidationError(f"nl.arange{tuple(args)} takes 1 to 3 ints")
    values = range(*(int(a) for a in args))
    if len(values) < 1:
        raise NkiValidationError(f"nl.arange{tuple(args)} is empty")
    return IndexExpr((len(values),), ((0, values.step),), values.start)


@dataclass(frozen=True)
class Grid:
    """What `nl.mgrid[...]` returns: one index vector per axis (`.p` partition, `.x` first free
    axis), unpackable as `i_p, i_f = nl.mgrid[0:128, 0:512]`."""

    exprs: tuple[IndexExpr, ...]

    @property
    def p(self) -> IndexExpr:
        return self.exprs[0]

    @property
    def x(self) -> IndexExpr:
        if len(self.exprs) < 2:
            raise NkiValidationError("this nl.mgrid has no free axis (.x)")
        return self.exprs[1]

    def __iter__(self) -> Iterator[IndexExpr]:
        return iter(self.exprs)

    def __len__(self) -> int:
        return len(self.exprs)

    def __getitem__(self, axis: int) -> IndexExpr:
        return self.exprs[axis]


class _MGrid:
    """`nl.mgrid[0:p, 0:f]`: a dense index grid, like numpy.mgrid."""

    def __getitem__(self, key: Any) -> Grid:
        slices = key if isinstance(key, tuple) else (key,)
        ranges = []
        for item in slices:
            if not isinstance(item, slice) or not _is_int(item.stop) or not all(
                    v is None or _is_int(v) for v in (item.start, item.step)):
                raise NkiValidationError(f"nl.mgrid[{key!r}]: each axis must be start:stop[:step]")
            ranges.append(range(int(item.start or 0), int(item.stop), int(item.step or 1)))
        shape = tuple(len(r) for r in ranges)
        if any(n < 1 for n in shape):
            raise NkiValidationError(f"nl.mgrid[{key!r}] has an empty axis")
        return Grid(tuple(IndexExpr(shape, ((axis, r.step),), r.start)
                          for axis, r in enumerate(ranges)))

    def __repr__(self) -> str:
        return "nl.mgrid"


mgrid = _MGrid()


# ---- masks --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Predicate:
    """`expr <op> 0`, from comparing index vectors (`i_p + 128 * m < n`)."""

    expr: IndexExpr
    op: str

    def __and__(self, other: Any) -> Mask:
        return Mask((self,)) & other

    __rand__ = __and__

    def __invert__(self) -> Predicate:
        return Predicate(self.expr, _NEGATED[self.op])

    def __or__(self, other: Any) -> Any:
        raise UnsupportedConstructError(
            "a mask joined with |: the enabled lanes of a mask are one range per axis (use &)")

    __ror__ = __or__

    def __bool__(self) -> bool:
        raise UnsupportedConstructError(
            f"the truth value of the mask predicate {self.expr.formula()} {SYMBOLS[self.op]} 0 "
            f"(it is evaluated per lane on the device: pass it as mask=, join predicates "
            f"with &)")


@dataclass(frozen=True, eq=False)
class Mask:
    """A conjunction of predicates (`p1 & p2`)."""

    predicates: tuple[Predicate, ...]

    def __and__(self, other: Any) -> Mask:
        if isinstance(other, Predicate):
            return Mask(self.predicates + (other,))
        if isinstance(other, Mask):
            return Mask(self.predicates + other.predicates)
        raise UnsupportedConstructError(f"mask & {other!r} (masks join masks and predicates)")

    __rand__ = __and__

    def __or__(self, other: Any) -> Any:
        raise UnsupportedConstructError(
            "a mask joined with |: the enabled lanes of a mask are one range per axis (use &)")

    __ror__ = __or__

    def __bool__(self) -> bool:
        raise UnsupportedConstructError(
            "the truth value of a mask (it is evaluated per lane on the device: pass it as mask=)")


@dataclass(frozen=True)
class Lanes:
    """The lanes a mask enables: `ranges` gives [start, stop) of each restricted axis of an index
    space of shape `space`; `empty` when no lane is enabled."""

    space: tuple[int, ...]
    ranges: tuple[tuple[int, int, int], ...]  # (axis, start, stop)
    empty: bool = False


def lanes_of(mask: Any, where: str) -> Lanes | None:
    """The lanes `mask=` enables (None: all of them)."""
    if mask is None or mask is True:
        return None
    if isinstance(mask, Predicate):
        predicates: tuple[Predicate, ...] = (mask,)
    elif isinstance(mask, Mask):
        predicates = mask.predicates
    else:
        raise NkiValidationError(
            f"{where}: mask={mask!r}; a mask compares index vectors, e.g. mask=(i_p < n)")
    space = broadcast_shapes(*(p.expr.shape for p in predicates))
    ranges = {axis: (0, size) for axis, size in enumerate(space)}
    empty = False
    for predicate in predicates:
        expr, compare = predicate.expr.aligned(space), COMPARISONS[predicate.op]
        text = f"{expr.formula()} {SYMBOLS[predicate.op]} 0"
        if not expr.terms:
            empty = empty or not compare(expr.const, 0)
            continue
        if len(expr.terms) > 1:
            raise UnsupportedConstructError(
                f"{where}: mask {text} depends on {len(expr.terms)} index axes at once; a mask "
                f"can only shrink each axis to a range (use "
                f"nisa.affine_select for triangular masks)")
        axis, coef = expr.terms[0]
        enabled = np.flatnonzero(compare(expr.const + coef * np.arange(space[axis]), 0))
        if enabled.size == 0:
            empty = True
            continue
        start, stop = int(enabled[0]), int(enabled[-1]) + 1
        if enabled.size != stop - start:
            raise UnsupportedConstructError(
                f"{where}: mask {text} enables lanes with holes on axis {axis}; a mask can only "
                f"shrink each axis to one range")
        low, high = ranges[axis]
        ranges[axis] = (max(low, start), min(high, stop))
        empty = empty or ranges[axis][0] >= ranges[axis][1]
    restricted = tuple((axis, lo, hi) for axis, (lo, hi) in ranges.items()
                       if (lo, hi) != (0, space[axis]))
    return Lanes(space, restricted, empty)
