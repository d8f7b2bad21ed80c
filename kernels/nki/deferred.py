"""Value-returning operations, deferred until their result is needed.

`nl.load(...)`, `nl.exp(x)`, `nl.matmul(...)` and the legacy `nisa.*` calls return a new tile.
Each becomes a `Deferred`: its result tensor exists at once (shape, dtype, name; allocated at once
in SBUF, as an `nl.ndarray` would be, but only when needed in PSUM, whose eight banks a temporary
must not take from accumulators) and is computed when it is first read, or before the next
instruction is recorded, whichever comes first (the tracer holds one at a time, so the program
order is the kernel's).  Until then
a statement that writes the result somewhere can claim it and emit it into that target instead:

* `t[i] = nl.load(...)` / `t[i] = nl.exp(...)`: the instruction writes t[i] directly;
* `psum[...] += nisa.nc_matmul(a, b)` / `+= nl.matmul(...)`: the matmul accumulates into psum
  (when psum holds an open accumulation group or nothing yet; otherwise the product goes
  through a temporary PSUM tile and a Vector-engine add).

That is how the NKI compiler treats these statements, and it keeps their cost honest (no extra
tile and copy).  Errors raised when a deferred operation is finally emitted name the kernel line
that wrote it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any

from isa.dtypes import DType, fp32
from isa.target import Space
from kernels.nki import context, errors
from kernels.nki.index import Lanes, lanes_of
from kernels.nki.ops import OPS
from kernels.nki.tensor import PSUM, SBUF, Buffer, NkiTensor, Storage, View

# How a deferred operation writes its target: into its own new tile, into another tensor
# (overwriting it), or adding to another tensor (`+=`, matmuls only).
MODES = ("own", "write", "add")
Produce = Callable[[NkiTensor, str], None]


@dataclass(eq=False)
class Deferred:
    """One value-returning operation not yet emitted."""

    storage: Storage  # its result, unallocated until materialized
    produce: Produce  # emits the instructions that write a target, in a mode of MODES
    lanes: Lanes | None  # the lanes its `mask=` enables
    location: str  # the kernel line that wrote it
    spaces: frozenset[Space]  # where it may write
    accumulates: bool  # a matmul: `+=` can accumulate it into PSUM

    def materialize(self) -> None:
        """Allocate the result if it is not yet, and emit the operation into it."""
        if not self.storage.placed:
            context.session().place(self.storage)
        self.write(NkiTensor.whole(self.storage), "own")

    def write(self, target: NkiTensor, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"deferred write mode {mode!r} not in {MODES}")
        with errors.at(self.location), context.masked(self.lanes):
            if self.lanes is None or not self.lanes.empty:
                self.produce(target, mode)

    def fits(self, target: NkiTensor) -> bool:
        """Whether the operation can write `target` in place of its own result."""
        return (target.on_chip and target.space in self.spaces
                and target.shape == self.storage.shape and target.storage is not self.storage
                and (not self.accumulates or target.dt == fp32))


def result(shape: tuple[int, ...], dt: DType, produce: Produce, where: str, name: str | None,
           *, mask: Any = None, buffer: Buffer = SBUF,
           spaces: frozenset[Space] = frozenset({Space.SBUF, Space.PSUM}),
           accumulates: bool = False) -> NkiTensor:
    """A new tile of `shape` and `dt` in `buffer` that `produce` will compute, deferred."""
    session = context.session()
    lanes = lanes_of(mask, where)
    tile = session.new_tensor(shape, dt, buffer, name, place=buffer.space is not Space.PSUM)
    session.defer(Deferred(tile.storage, produce, lanes, errors.user_location(),
                           frozenset(spaces), accumulates))
    return tile


def _held(value: NkiTensor) -> Deferred | None:
    """The deferred operation `value` is the whole result of, if it is still held."""
    if not value.is_base or value.view != View.of_storage(value.storage):
        return None
    return context.session().pending(value.storage)


def write_deferred(target: NkiTensor, value: NkiTensor) -> bool:
    """`target = value` by emitting value's deferred operation into target; False if value is
    not a held deferred result that can write target."""
    held = _held(value)
    if held is None or not held.fits(target):
        return False
    context.session().claim(value.storage)
    held.write(target, "write")
    return True


def accumulate_deferred(target: NkiTensor, value: NkiTensor) -> bool:
    """`target += value` for a held matmul result: the matmul accumulates into target."""
    held = _held(value)
    if held is None or not held.accumulates or not held.fits(target):
        return False
    context.session().claim(value.storage)
    held.write(target, "add")
    return True


def matmul(stationary: NkiTensor, moving: NkiTensor, where: str, name: str | None) -> NkiTensor:
    """stationary[K, M].T @ moving[K, N] as a new PSUM tile [M, N] (fp32), deferred."""
    from kernels.nki import isa as nisa  # the isa functions lower their operands

    for role, tile in (("stationary", stationary), ("moving", moving)):
        if not isinstance(tile, NkiTensor) or not tile.on_chip or tile.ndim < 2:
            raise errors.NkiValidationError(
                f"{where}: {role} must be an on-chip tile [K, ...], got {tile!r}")
    shape = (prod(stationary.shape[1:]), *moving.shape[1:])

    def produce(dst: NkiTensor, mode: str) -> None:
        if mode == "add" and not nisa.matmul_can_add(dst):
            # dst already holds values a new accumulation group would overwrite.
            partial = context.session().new_tensor(dst.shape, fp32, PSUM, f"{dst.name}_product")
            nisa.nc_matmul(dst=partial, stationary=stationary, moving=moving)
            nisa.tensor_tensor(dst=dst, data1=dst, data2=partial, op=OPS["add"])
            return
        nisa.nc_matmul(dst=dst, stationary=stationary, moving=moving,
                       accumulate=False if mode == "write" else None)

    return result(shape, fp32, produce, where, name, buffer=PSUM,
                  spaces=frozenset({Space.PSUM}), accumulates=True)
