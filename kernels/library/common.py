"""What the library kernels share: their precondition error, tile spans over ragged edges, and
the on-chip capacity the traced target offers.

Kernels assert their preconditions with `require(...)` (an exception, so `python -O` cannot
strip it) and name the layout parameter, the value and the hardware limit in the message, the way
the NKI tutorials' `assert`s do.
"""

from __future__ import annotations

from collections.abc import Iterator

from kernels.nki import context


class LayoutError(ValueError):
    """A library kernel cannot run this shape with this layout: a tile over its hardware limit,
    blocks that do not divide the shape, or a working set larger than SBUF/PSUM."""


def require(condition: bool, message: str) -> None:
    """A kernel precondition: raise LayoutError(message) when it does not hold."""
    if not condition:
        raise LayoutError(message)


def cdiv(total: int, tile: int) -> int:
    """How many tiles of `tile` elements cover `total` (the last one may be ragged)."""
    return -(-total // tile)


def span(index: int, tile: int, total: int) -> tuple[int, int]:
    """(start, size) of tile `index` of `total` elements in tiles of `tile`; the last is ragged."""
    start = index * tile
    return start, min(tile, total - start)


def spans(total: int, tile: int) -> Iterator[tuple[int, int, int]]:
    """(index, start, size) of every tile covering `total` elements."""
    for index in range(cdiv(total, tile)):
        yield (index, *span(index, tile, total))


def sbuf_partition_bytes() -> int:
    """Bytes per SBUF partition of the target being traced (192 KiB on NeuronCore-v2).

    NKI spells this `nl.tile_size.total_available_sbuf_size`; the ncemu language does not have
    that constant yet, so the trace session's target is asked directly.
    """
    return context.session().target.sbuf_partition_bytes


def require_sbuf(kernel: str, what: str, nbytes: int) -> None:
    """The working set `what` (bytes per partition) must fit one SBUF partition."""
    capacity = sbuf_partition_bytes()
    require(nbytes <= capacity,
            f"{kernel}: {what} needs {nbytes} bytes per partition; SBUF has {capacity} bytes "
            f"per partition (nl.tile_size.total_available_sbuf_size)")
