"""The trace session that language calls record into, and the lanes a `mask=` leaves enabled.

The language (`kernels.nki`) never imports the tracer (`kernels.trace`): the tracer installs a
session object here for the duration of one trace, and `nl.*` / `nisa.*` calls reach it through
`session()`.  A call outside a trace fails loudly instead of computing anything.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from kernels.nki.errors import TracingError

_SESSION: contextvars.ContextVar[Any] = contextvars.ContextVar("nki_trace_session", default=None)
# The lanes a legacy `mask=` leaves enabled (a `kernels.nki.index.Lanes`) for the instructions
# recorded inside `masked(...)`; every operand is narrowed to them when it is lowered.
_LANES: contextvars.ContextVar[Any] = contextvars.ContextVar("nki_mask_lanes", default=None)


def session() -> Any:
    """The active trace session (a `kernels.trace.Tracer`); raises outside a traced kernel."""
    current = _SESSION.get()
    if current is None:
        raise TracingError(
            "NKI language call outside a traced kernel; run the kernel through "
            "emulator.kernel_runner.simulate / benchmark / trace")
    return current


def active() -> bool:
    return _SESSION.get() is not None


@contextlib.contextmanager
def install(tracer: Any) -> Iterator[None]:
    """Make `tracer` the session of every language call inside the `with` block."""
    token = _SESSION.set(tracer)
    try:
        yield
    finally:
        _SESSION.reset(token)


def lanes() -> Any:
    """The active mask's lanes, or None when every lane is enabled."""
    return _LANES.get()


@contextlib.contextmanager
def masked(lanes: Any) -> Iterator[None]:
    """Record the instructions of the block with only `lanes` enabled (None: all of them)."""
    token = _LANES.set(lanes)
    try:
        yield
    finally:
        _LANES.reset(token)
