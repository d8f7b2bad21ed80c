"""The record each library kernel is registered with: the kernel, its numpy golden, how to make
random inputs for a shape, its problem sizes, options and layout parameters (defaults and
allowed values), and the tolerance its result meets per dtype.

A record describes itself (`describe()`, the text `ncemu run NAME --help` shows) and resolves
user choices against its declared parameters: an unknown name or a value outside a parameter's
allowed set raises, naming the kernel, the parameter and what is allowed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from kernels.nki import Kernel

# The dtypes every library kernel runs at, by isa name.
DTYPES: dict[str, Any] = {"fp32": np.float32, "bf16": ml_dtypes.bfloat16}

Value = int | float | str | bool | None
InputMaker = Callable[[Mapping[str, int], Mapping[str, Value], Any, np.random.Generator],
                      tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class Param:
    """A named parameter: a problem size (an int), a problem option, or a layout choice.

    `allowed` lists the legal values (empty: any positive int for sizes).  `to_kernel=False`
    marks an option that only shapes the inputs (e.g. which operand broadcasts).
    """

    name: str
    default: Value
    help: str
    allowed: tuple[Value, ...] = ()
    to_kernel: bool = True

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"parameter name {self.name!r} is not an identifier")
        if self.allowed and not self.permits(self.default):
            raise ValueError(f"parameter {self.name}: default {self.default!r} is not one of "
                             f"its allowed values {self.allowed}")

    def permits(self, value: Value) -> bool:
        """Whether `value` is allowed; unlike `in`, True is not 1 here (nor 1 True)."""
        return not self.allowed or any(
            value == choice and isinstance(value, bool) == isinstance(choice, bool)
            for choice in self.allowed)

    def check(self, kernel: str, value: Value) -> Value:
        if not self.permits(value):
            raise ValueError(f"{kernel}: {self.name}={value!r} is not one of {self.allowed}")
        return value

    def text(self) -> str:
        choices = f" (one of {', '.join(map(repr, self.allowed))})" if self.allowed else ""
        return f"{self.name}={self.default!r}{choices}: {self.help}"


@dataclass(frozen=True)
class Tolerance:
    """|result - golden| <= atol + rtol * |golden|, element-wise."""

    rtol: float
    atol: float

    def __post_init__(self) -> None:
        if self.rtol < 0 or self.atol < 0:
            raise ValueError(f"tolerance rtol={self.rtol}, atol={self.atol} must be >= 0")


@dataclass(frozen=True)
class LibraryKernel:
    """One library kernel and everything needed to run and check it for a shape."""

    name: str
    summary: str
    signature: str  # the operands and result, e.g. "lhsT [K, M], rhs [K, N] -> [M, N]"
    kernel: Kernel
    golden: Callable[..., np.ndarray]
    make_inputs: InputMaker
    shapes: tuple[Param, ...]
    tolerance: tuple[tuple[str, Tolerance], ...]  # (dtype name, tolerance) for every DTYPES
    options: tuple[Param, ...] = ()
    layout: tuple[Param, ...] = ()
    fixed: tuple[tuple[str, Value], ...] = ()  # kernel/golden arguments this entry pins
    notes: str = ""

    def __post_init__(self) -> None:
        params = (*self.shapes, *self.options, *self.layout)
        names = [p.name for p in params]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"library kernel {self.name}: parameters {duplicates} are declared "
                             f"twice")
        accepted = inspect.signature(self.kernel.function).parameters
        passed = [p.name for p in (*self.options, *self.layout) if p.to_kernel]
        missing = [n for n in passed + [n for n, _ in self.fixed] if n not in accepted]
        if missing:
            raise ValueError(f"library kernel {self.name}: {self.kernel.name} takes no "
                             f"argument {missing}")
        if {d for d, _ in self.tolerance} != set(DTYPES):
            raise ValueError(f"library kernel {self.name}: tolerances for "
                             f"{sorted(d for d, _ in self.tolerance)}, need {sorted(DTYPES)}")

    # ---- resolving choices -----------------------------------------------------------------------
    def _resolve(self, group: tuple[Param, ...], what: str,
                 values: Mapping[str, Value] | None) -> dict[str, Value]:
        values = dict(values or {})
        known = {p.name for p in group}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{self.name}: unknown {what} {unknown}; {what}: "
                             f"{sorted(known) or 'none'}")
        return {p.name: p.check(self.name, values.get(p.name, p.default)) for p in group}

    def shape(self, values: Mapping[str, Value] | None = None) -> dict[str, int]:
        """Problem sizes: the defaults updated by `values`; each must be an int >= 1."""
        sizes = self._resolve(self.shapes, "shapes", values)
        for name, size in sizes.items():
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
                raise ValueError(f"{self.name}: shape {name}={size!r} must be an int >= 1")
        return {name: int(size) for name, size in sizes.items()}

    def option_values(self, values: Mapping[str, Value] | None = None) -> dict[str, Value]:
        return self._resolve(self.options, "options", values)

    def layout_values(self, values: Mapping[str, Value] | None = None) -> dict[str, Value]:
        return self._resolve(self.layout, "layout parameters", values)

    # ---- running ---------------------------------------------------------------------------------
    def inputs(self, shapes: Mapping[str, Value] | None = None,
               options: Mapping[str, Value] | None = None, dtype: str = "fp32",
               seed: int = 0) -> tuple[np.ndarray, ...]:
        """Random input arrays for these sizes and options, in `dtype` (rounded from fp64)."""
        if dtype not in DTYPES:
            raise ValueError(f"{self.name}: dtype {dtype!r} is not one of {sorted(DTYPES)}")
        return self.make_inputs(self.shape(shapes), self.option_values(options), DTYPES[dtype],
                                np.random.default_rng(seed))

    def kernel_kwargs(self, options: Mapping[str, Value] | None = None,
                      layout: Mapping[str, Value] | None = None) -> dict[str, Value]:
        """The keyword arguments of the kernel call: pinned values, options, layout."""
        chosen = self.option_values(options)
        kwargs = dict(self.fixed)
        kwargs.update({p.name: chosen[p.name] for p in self.options if p.to_kernel})
        kwargs.update(self.layout_values(layout))
        return kwargs

    def reference(self, arrays: tuple[np.ndarray, ...],
                  options: Mapping[str, Value] | None = None) -> np.ndarray:
        """The golden result (float64) for these input arrays."""
        chosen = self.option_values(options)
        kwargs = dict(self.fixed)
        kwargs.update({p.name: chosen[p.name] for p in self.options if p.to_kernel})
        return self.golden(*arrays, **kwargs)

    def tolerance_for(self, dtype: str) -> Tolerance:
        for name, tolerance in self.tolerance:
            if name == dtype:
                return tolerance
        raise ValueError(f"{self.name}: no tolerance for dtype {dtype!r}; "
                         f"dtypes: {sorted(DTYPES)}")

    def describe(self) -> str:
        """Everything `ncemu run NAME --help` shows."""
        lines = [f"{self.name}: {self.summary}", f"  operands: {self.signature}",
                 f"  kernel: {self.kernel.function.__module__}.{self.kernel.name}"
                 + "".join(f", {k}={v!r}" for k, v in self.fixed)]
        for title, group in (("shapes (--shape NAME=INT)", self.shapes),
                             ("options (change the result)", self.options),
                             ("layout (changes the time; the result at most by rounding)",
                              self.layout)):
            if group:
                lines.append(f"  {title}:")
                lines += [f"    {p.text()}" for p in group]
        lines.append("  tolerance: " + "; ".join(
            f"{d} rtol={t.rtol:g} atol={t.atol:g}" for d, t in self.tolerance))
        if self.notes:
            lines.append(f"  notes: {self.notes}")
        return "\n".join(lines)
