"""Errors of the NKI kernel language, each naming the kernel source line that caused it.

A traced kernel fails at the line the user wrote, not inside the tracer: every error raised here
appends the first caller frame outside `kernels/nki` and `kernels/trace` (the kernel's
`file:line` and function).  The class names follow NKI where NKI has one
(`nki.isa.NkiValidationError` for hardware-constraint violations).
"""

from __future__ import annotations

import contextlib
import contextvars
import linecache
import os
import re
import sys
from collections.abc import Iterator
from types import FrameType

# Frames from these directories are the language and the tracer, never the user's kernel.
_OWN_DIRS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), name) + os.sep
    for name in ("nki", "trace"))


def user_frame() -> FrameType | None:
    """The innermost frame that is not part of the language or the tracer: the kernel's."""
    frame = sys._getframe(1)
    while frame is not None:
        if not os.path.abspath(frame.f_code.co_filename).startswith(_OWN_DIRS):
            return frame
        frame = frame.f_back
    return None


# The kernel line a deferred operation was written on (see `kernels.nki.deferred`): errors raised
# while it is emitted later name that line, not the line that happened to trigger the emission.
_LOCATION: contextvars.ContextVar[str | None] = contextvars.ContextVar("nki_location",
                                                                      default=None)


@contextlib.contextmanager
def at(location: str) -> Iterator[None]:
    """Errors raised inside the block name `location` as the kernel's source line."""
    token = _LOCATION.set(location)
    try:
        yield
    finally:
        _LOCATION.reset(token)


def user_location() -> str:
    """`file.py:42 in my_kernel`: where the kernel called the language."""
    override = _LOCATION.get()
    if override is not None:
        return override
    frame = user_frame()
    if frame is None:
        return "<unknown location>"
    code = frame.f_code
    return f"{os.path.basename(code.co_filename)}:{frame.f_lineno} in {code.co_name}"


_ASSIGNED = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?::[^=]+)?=(?!=)")


def assigned_name() -> str | None:
    """The variable the kernel's current line assigns to (`x = nl.ndarray(...)` gives `x`)."""
    frame = user_frame()
    if frame is None:
        return None
    match = _ASSIGNED.match(linecache.getline(frame.f_code.co_filename, frame.f_lineno))
    return match.group(1) if match else None


class NkiError(Exception):
    """Base of kernel-language errors; the message ends with the kernel's source location."""

    def __init__(self, message: str) -> None:
        self.location = user_location()
        super().__init__(f"{message} (at {self.location})")


class NkiValidationError(NkiError, ValueError):
    """A hardware constraint is violated (partition count, tile size, engine port, dtype)."""


class AllocationError(NkiError, MemoryError):
    """SBUF or PSUM cannot hold a new tile; the message names the tile and the limit."""


class TileIndexError(NkiError, IndexError):
    """An index or slice falls outside a tensor, or addresses partitions illegally."""


class UnsupportedConstructError(NkiError, NotImplementedError):
    """An NKI construct this emulator does not implement; it fails instead of guessing."""


class TracingError(NkiError, RuntimeError):
    """The language was used outside a traced kernel, or a kernel misuses the tracer."""
