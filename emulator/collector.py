"""Pausing Python's cyclic garbage collector while a pass walks a big program.

The passes over a program (validation, race detection, encoding, the functional executor)
allocate short-lived objects freed by reference counting.  With a million instruction records
alive, those allocations keep triggering the cyclic collector, whose full collections rescan
every record: the passes become superlinear in program size.  Nothing in them makes reference
cycles worth collecting, so the collector waits until they finish.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block (re-entrant; restores the previous state)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
