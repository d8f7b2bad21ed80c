"""Named workloads a sweep point can build: each turns a shape and a layout into a Program.

A workload declares the shape parameters (what is computed: sizes, dtype) and layout parameters
(how it is scheduled on the core: tile sizes, buffer counts) it accepts, each with its type and
default, and a builder `build(shape, layout, target) -> Program` for the core's `Target`.
`WORKLOADS` is the one table of them; adding a workload is adding one entry to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from isa.dtypes import DTYPES
from isa.program import Program
from isa.target import Target

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


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("matmul", "tiled matmul result[M, N] = lhsT[K, M].T @ rhs[K, N] "
                       "(kernels.programs.tiled_matmul)", _matmul,
             shape=(Param("m", int, 1024, "rows of the result (multiple of 128)"),
                    Param("k", int, 512, "contraction size (multiple of 128)"),
                    Param("n", int, 1024, "columns of the result (multiple of tile_n)"),
                    Param("dtype", str, "bf16", "operand dtype", tuple(sorted(DTYPES)))),
             layout=(Param("tile_n", int, 512, "columns of one output tile (moving free size)"),
                     Param("buffers", int, 2, "PSUM banks / output buffers in flight"))),
)}


def workload(name: str) -> Workload:
    """The workload called `name`; an unknown name raises listing the known ones."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; known workloads: {', '.join(WORKLOADS)}")
    return WORKLOADS[name]
