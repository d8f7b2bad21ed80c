"""Named workloads a sweep point can build: each turns a shape and a layout into a Program.

A workload declares the shape parameters (what is computed: sizes, dtype) and layout parameters
(how it is scheduled on the core: tile sizes, buffer counts) it accepts, each with its type and
default, and a builder `build(shape, layout, target) -> Program` for the core's `Target`.
`WORKLOADS` is the one table of them; adding a workload is adding one entry to it.  Every
kernel of the library (`kernels.library.LIBRARY`) is a workload `lib.NAME` through one adapter:
its sizes, dtype and int/str options as shape parameters, its layout parameters as layout
parameters, traced from shapes alone (`TensorSpec`s, no input data).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np

from isa.dtypes import DTYPES
from isa.program import Program
from isa.target import Target
from kernels.library import DTYPES as LIBRARY_DTYPES
from kernels.library import LIBRARY, LibraryKernel
from kernels.library import Param as LibraryParam
from kernels.trace import TensorSpec, trace_kernel

Value = int | str


@dataclass(frozen=True)
class Param:
    """One parameter of a workload: its name, type, default and, optionally, the legal values."""

    name: str
    kind: type
    default: Value
    help: str
    choices: tuple[Value, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in (int, str):
            raise ValueError(f"parameter {self.name}: kind {self.kind!r} must be int or str")
        self.check(self.default, f"default of {self.name}")

    def check(self, value: object, where: str) -> Value:
        """`value` if it is legal for this parameter, else a ValueError naming `where`."""
        # bool is an int to Python but never a size or a count.
        if not isinstance(value, self.kind) or isinstance(value, bool):
            raise ValueError(f"{where} = {value!r}: expected {self.kind.__name__}, "
                             f"got {type(value).__name__}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{where} = {value!r}: must be one of "
                             f"{', '.join(map(str, self.choices))}")
        return value


Builder = Callable[[Mapping[str, Value], Mapping[str, Value], Target], Program]


@dataclass(frozen=True)
class Workload:
    """A program family: `build(shape, layout, target)` with every parameter filled in."""

    name: str
    description: str
    build: Builder
    shape: tuple[Param, ...]
    layout: tuple[Param, ...] = ()

    def __post_init__(self) -> None:
        names = [p.name for p in self.shape + self.layout]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"workload {self.name}: parameter(s) {', '.join(repeated)} declared "
                             f"twice (shape and layout names must all differ)")

    def params(self, group: str) -> tuple[Param, ...]:
        """The parameters of `group`, "shape" or "layout"."""
        return {"shape": self.shape, "layout": self.layout}[group]

    def resolve(self, group: str, given: Mapping[str, object]) -> dict[str, Value]:
        """Every parameter of `group`: the given values, checked, and the defaults for the rest;
        an unknown name raises naming it and the known ones."""
        params = {p.name: p for p in self.params(group)}
        for name in given:
            if name not in params:
                raise ValueError(f"workload {self.name} has no {group} parameter {name!r}; "
                                 f"its {group} parameters: {', '.join(params) or 'none'}")
        return {name: p.check(given.get(name, p.default), f"{group}.{name}")
                for name, p in params.items()}

    def program(self, shape: Mapping[str, object], layout: Mapping[str, object],
                target: Target) -> Program:
        """The program of one point; unknown or ill-typed parameters raise before building."""
        return self.build(self.resolve("shape", shape), self.resolve("layout", layout), target)


def _matmul(shape: Mapping[str, Value], layout: Mapping[str, Value], target: Target) -> Program:
    from kernels.programs import tiled_matmul

    return tiled_matmul(shape["m"], shape["k"], shape["n"], shape["dtype"],
                        tile_n=layout["tile_n"], buffers=layout["buffers"], target=target)


# ---- library kernels as workloads -------------------------------------------------------------
LIBRARY_PREFIX = "lib."  # workload lib.NAME is LIBRARY[NAME]; "matmul" is the hand-scheduled one


class _DrawnShape:
    """What an input maker's random draw becomes when only shapes are wanted: a shape that
    broadcasts like an array under + - * /, and whose `astype(dtype)` is the TensorSpec a
    kernel is traced with."""

    def __init__(self, shape: int | tuple[int, ...] | None) -> None:
        self.shape = () if shape is None else tuple(np.broadcast_shapes(shape))

    def _combine(self, other: object) -> _DrawnShape:
        other_shape = other.shape if isinstance(other, _DrawnShape) else np.shape(other)
        return _DrawnShape(np.broadcast_shapes(self.shape, other_shape))

    __add__ = __radd__ = __sub__ = __rsub__ = _combine
    __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _combine

    def astype(self, dtype: object) -> TensorSpec:
        return TensorSpec(self.shape, dtype)


class _ShapeDraws:
    """A stand-in for `np.random.Generator` whose draws are shapes, not numbers: a library
    input maker run with it returns the TensorSpecs of its arrays without making any data.
    A maker that draws another way fails here, loudly (AttributeError)."""

    def standard_normal(self, size: int | tuple[int, ...] | None = None) -> _DrawnShape:
        return _DrawnShape(size)

    def normal(self, loc: float = 0.0, scale: float = 1.0,
               size: int | tuple[int, ...] | None = None) -> _DrawnShape:
        return _DrawnShape(size)

    def uniform(self, low: float = 0.0, high: float = 1.0,
                size: int | tuple[int, ...] | None = None) -> _DrawnShape:
        return _DrawnShape(size)

    def choice(self, values: object, size: int | tuple[int, ...] | None = None) -> _DrawnShape:
        return _DrawnShape(size)


def library_input_specs(entry: LibraryKernel, sizes: Mapping[str, Value],
                        options: Mapping[str, Value], dtype: str) -> tuple[TensorSpec, ...]:
    """The shapes and dtypes of `entry.inputs(sizes, options, dtype)`, without their data: the
    entry's own input maker, run on shape draws (one source of truth for the operands)."""
    if dtype not in LIBRARY_DTYPES:
        raise ValueError(f"{entry.name}: dtype {dtype!r} is not one of {sorted(LIBRARY_DTYPES)}")
    specs = entry.make_inputs(entry.shape(sizes), entry.option_values(options),
                              LIBRARY_DTYPES[dtype], _ShapeDraws())
    for i, spec in enumerate(specs):
        if not isinstance(spec, TensorSpec):
            raise TypeError(f"{entry.name}: input {i} of its input maker is "
                            f"{type(spec).__name__}, not a drawn array cast with .astype(dtype)")
    return tuple(specs)


def _is_sweepable(param: LibraryParam) -> bool:
    """Whether a library option can be a sweep parameter: int or str values (a sweep Param's
    kinds); bool and float options (causal, eps) keep their defaults."""
    return all(isinstance(v, (int, str)) and not isinstance(v, bool)
               for v in (param.default, *param.allowed))


def _sweep_param(entry: LibraryKernel, param: LibraryParam) -> Param:
    if not _is_sweepable(param):
        raise ValueError(f"library kernel {entry.name}: layout parameter {param.name}="
                         f"{param.default!r} is neither int nor str, which a sweep cannot take")
    return Param(param.name, type(param.default), param.default, param.help, param.allowed)


def _library_program(name: str, shape: Mapping[str, Value], layout: Mapping[str, Value],
                     target: Target) -> Program:
    """LIBRARY[name] traced for `target` from the shapes of its inputs; one program."""
    entry = LIBRARY[name]
    sizes = {p.name: shape[p.name] for p in entry.shapes}
    options = {p.name: shape[p.name] for p in entry.options if _is_sweepable(p)}
    specs = library_input_specs(entry, sizes, options, shape["dtype"])
    traced = trace_kernel(entry.kernel, specs, entry.kernel_kwargs(options, layout), target)
    (program,) = traced.programs  # a library kernel is a plain @jit kernel, not a grid launch
    return program


def library_workload(entry: LibraryKernel) -> Workload:
    """The workload `lib.NAME` of a library kernel: sizes, dtype and int/str options as shape
    parameters, the layout parameters with their allowed values as layout parameters."""
    options = [p for p in entry.options if _is_sweepable(p)]
    fixed = [f"{p.name}={p.default!r}" for p in entry.options if not _is_sweepable(p)]
    shape = (*(Param(p.name, int, p.default, p.help) for p in entry.shapes),
             Param("dtype", str, "bf16", "operand dtype", tuple(sorted(LIBRARY_DTYPES))),
             *(Param(p.name, type(p.default), p.default, p.help, p.allowed) for p in options))
    note = f"; {', '.join(fixed)} fixed" if fixed else ""
    return Workload(f"{LIBRARY_PREFIX}{entry.name}",
                    f"{entry.summary} (kernels.library {entry.name}, traced from shapes{note})",
                    partial(_library_program, entry.name), shape=shape,
                    layout=tuple(_sweep_param(entry, p) for p in entry.layout))


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("matmul", "tiled matmul result[M, N] = lhsT[K, M].T @ rhs[K, N] "
                       "(kernels.programs.tiled_matmul)", _matmul,
             shape=(Param("m", int, 1024, "rows of the result (multiple of 128)"),
                    Param("k", int, 512, "contraction size (multiple of 128)"),
                    Param("n", int, 1024, "columns of the result (multiple of tile_n)"),
                    Param("dtype", str, "bf16", "operand dtype", tuple(sorted(DTYPES)))),
             layout=(Param("tile_n", int, 512, "columns of one output tile (moving free size)"),
                     Param("buffers", int, 2, "PSUM banks / output buffers in flight"))),
    *(library_workload(entry) for entry in LIBRARY.values()),
)}


def workload(name: str) -> Workload:
    """The workload called `name`; an unknown name raises listing the known ones."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; known workloads: {', '.join(WORKLOADS)}")
    return WORKLOADS[name]
