"""`@nki.jit` kernels and their SPMD launches (`kernel[grid]`).

`jit` only marks a function as a kernel: it does not compile anything.  The runners in
`emulator.kernel_runner` trace a kernel (or a launch `kernel[2, 3]`, one program per grid point)
into `isa.Program`s and run them.  Calling a kernel from inside another traced kernel inlines it;
calling it outside a trace raises, pointing to the runners.  Options NKI's decorator takes
(`mode=`, `platform_target=`, `additional_compile_opt=`, ...) are accepted and ignored.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kernels.nki import context
from kernels.nki.errors import NkiValidationError, TracingError


def _grid(value: Any) -> tuple[int, ...]:
    """An SPMD grid from `kernel[4]` or `kernel[2, 3]`: positive ints."""
    sizes = value if isinstance(value, tuple) else (value,)
    try:
        grid = tuple(int(n) for n in sizes)
    except (TypeError, ValueError):
        raise NkiValidationError(f"SPMD grid {value!r} must be ints, e.g. kernel[2, 3]") from None
    if not grid or any(n < 1 for n in grid):
        raise NkiValidationError(f"SPMD grid {value!r} needs at least one size, each >= 1")
    return grid


class Kernel:
    """A function marked with `@jit`; it keeps the function's name and docstring."""

    def __init__(self, function: Callable[..., Any], options: dict[str, Any]) -> None:
        self.function = function
        self.options = dict(options)
        functools.update_wrapper(self, function)

    def __repr__(self) -> str:
        return f"<nki kernel {self.name}>"

    @property
    def name(self) -> str:
        return self.function.__name__

    def __getitem__(self, grid: Any) -> Launch:
        return Launch(self, _grid(grid))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if context.active():
            return self.function(*args, **kwargs)  # a kernel called by a kernel: inline it
        raise TracingError(
            f"kernel {self.name} called directly; run it with "
            f"emulator.kernel_runner.simulate({self.name})(...) or benchmark(...)")


@dataclass(frozen=True)
class Launch:
    """`kernel[grid]`: one program instance per point of the grid."""

    kernel: Kernel
    grid: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.kernel.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TracingError(
            f"SPMD launch {self.name}{list(self.grid)} called directly; run it with "
            f"emulator.kernel_runner.simulate({self.name}[...])(...) or benchmark(...)")


def jit(function: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Mark a kernel: `@jit`, `@jit()` or `@jit(mode="simulation", ...)` (options ignored)."""
    if function is None:
        return lambda f: Kernel(f, options)
    return Kernel(function, options)


def unwrap(kernel: Any) -> tuple[Callable[..., Any], tuple[int, ...]]:
    """(function, grid) of a Launch, a Kernel, or a plain function (grid () = one program)."""
    if isinstance(kernel, Launch):
        return kernel.kernel.function, kernel.grid
    if isinstance(kernel, Kernel):
        return kernel.function, ()
    if callable(kernel):
        return kernel, ()
    raise TracingError(f"{kernel!r} is not a kernel, a kernel[grid] launch or a function")
