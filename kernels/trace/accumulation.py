"""Which `nc_matmul` overwrites its PSUM destination and which accumulates into it.

NKI's rule (nc_matmul, `accumulate=None`): the first matmul into a PSUM location overwrites it,
later ones into the same location accumulate, forming an accumulation group until the result is
evicted.  The tracer implements it per destination region:

* a matmul continues the open group whose region is exactly its destination (same partitions,
  same bytes, same pattern), if no other instruction touched those bytes since;
* otherwise it starts a new group (accumulate=False): after the tile's allocation, after the
  group was read by another engine (eviction), or after a zero `memset`;
* a matmul that would start a group on bytes another instruction wrote with data (a copy, an
  activation, a transpose, a non-zero memset) raises: NKI would accumulate onto those values,
  which the emulator's accumulation-group model does not allow.

The legacy `psum[...] += nisa.nc_matmul(...)` means dst + product.  A matmul gives exactly that
when it continues the open group on dst, or when dst holds nothing yet (freshly allocated, or
zero-filled); `can_add` says which, also remembering the regions of closed groups, which still
hold their sums.  Otherwise the tracer adds the product with the Vector engine.
"""

from __future__ import annotations

from isa.access import AccessPattern
from kernels.nki.errors import NkiValidationError, UnsupportedConstructError
from kernels.nki.tensor import merge_axes
from kernels.trace.hazards import Region


def group_key(ap: AccessPattern) -> tuple:
    """The identity of a destination region: the same bytes in the same order."""
    return (ap.space, ap.partition_start, ap.partitions, ap.dtype.itemsize, ap.offset,
            merge_axes(ap.axes))


class AccumulationGroups:
    """Open matmul accumulation groups and PSUM bytes last written by other instructions."""

    def __init__(self) -> None:
        self.open: dict[tuple, Region] = {}
        self.dirty: list[tuple[Region, str]] = []  # (bytes, what wrote them)
        self.closed: list[Region] = []  # regions of ended groups: they hold matmul sums

    def can_add(self, dst: AccessPattern) -> bool:
        """Whether a matmul into dst (accumulate=None) leaves dst + product in it."""
        if group_key(dst) in self.open:
            return True
        region = Region.of(dst)
        return not (any(box.overlaps(region) for box in self.open.values())
                    or any(box.overlaps(region) for box, _ in self.dirty)
                    or any(box.overlaps(region) for box in self.closed))

    def matmul(self, dst: AccessPattern, explicit: bool | None, where: str) -> bool:
        """Whether this matmul accumulates; updates the open groups."""
        key, region = group_key(dst), Region.of(dst)
        continues = key in self.open
        if explicit is True and not continues:
            raise NkiValidationError(
                f"{where}: accumulate=True into {dst} but no accumulation group is open on exactly "
                f"that PSUM region (start the group with an overwriting nc_matmul)")
        accumulate = continues if explicit is None else explicit
        if not accumulate:
            writers = [what for box, what in self.dirty if box.overlaps(region)]
            if writers and explicit is None:
                raise UnsupportedConstructError(
                    f"{where}: nc_matmul into {dst}, whose bytes were written by {writers[0]}; "
                    f"NKI would accumulate onto them, which is not supported (evict them or pass "
                    f"accumulate=False)")
            self._close(region)
            self.dirty = [(box, what) for box, what in self.dirty if not region.contains(box)]
            self.closed = [box for box in self.closed if not region.contains(box)]
            self.open[key] = region
        return accumulate

    def other_access(self, region: Region, write: bool, writer: str | None) -> None:
        """Another instruction read or wrote PSUM bytes: overlapping groups end.  `writer` names
        a write of data (None for a zero fill, which a new group's overwrite reproduces)."""
        self._close(region)
        if write:
            self.dirty = [(box, what) for box, what in self.dirty if not region.contains(box)]
            self.closed = [box for box in self.closed if not region.contains(box)]
            if writer is not None:
                self.dirty.append((region, writer))

    def allocated(self, region: Region) -> None:
        """A new tile starts undefined: nothing before its allocation carries over."""
        self._close(region)
        self.dirty = [(box, what) for box, what in self.dirty if not box.overlaps(region)]
        self.closed = [box for box in self.closed if not box.overlaps(region)]

    def _close(self, region: Region) -> None:
        for key in [k for k, box in self.open.items() if box.overlaps(region)]:
            self.closed.append(self.open.pop(key))
