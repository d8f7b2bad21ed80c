"""Semaphores between instruction streams, inserted from the hazards the tracer finds.

Each stream that ever has to be waited for gets one counting semaphore, signalled from that
stream only (Program.validate and the race detector rely on it).  A signal is appended to the
producing stream lazily, when a consumer first needs one after a given instruction; a later
consumer re-uses the earliest signal that already follows the instruction it needs.

Redundant waits are avoided with vector clocks: for every stream the synchroniser knows, per
other stream, the last instruction it is already ordered after — through its own waits and,
transitively, through what the producer knew when it signalled.  A wait is emitted only when
that knowledge does not yet cover the instruction a consumer needs.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from isa.instructions import Wait
from isa.program import ProgramBuilder
from isa.target import Target
from kernels.nki.errors import NkiValidationError

Clock = dict[str, int]  # stream -> index of the last instruction known to have completed


@dataclass(frozen=True)
class SignalPoint:
    """A `signal` placed at `index` of its stream: the `count`-th signal of its semaphore."""

    index: int
    count: int
    clock: Clock = field(compare=False)  # what its stream was ordered after, itself included


class Synchroniser:
    """Places signal/wait pairs in a ProgramBuilder so that consumers follow producers."""

    def __init__(self, builder: ProgramBuilder, target: Target) -> None:
        self.builder = builder
        self.target = target
        self.semaphores: dict[str, int] = {}  # signalling stream -> semaphore
        self.signals: dict[str, list[SignalPoint]] = {}
        self.clocks: dict[str, Clock] = {}
        self.waits = 0

    def knows(self, consumer: str, producer: str, index: int) -> bool:
        """True when `consumer` is already ordered after `producer`'s instruction `index`."""
        return self.clocks.get(consumer, {}).get(producer, -1) >= index

    def order(self, producer: str, index: int, consumer: str) -> None:
        """Make the next instruction of `consumer` wait for `producer`'s instruction `index`."""
        if producer == consumer or self.knows(consumer, producer, index):
            return
        point = self._signal_after(producer, index)
        self.builder.emit(consumer, Wait(self.semaphores[producer], point.count))
        self.waits += 1
        clock = self.clocks.setdefault(consumer, {})
        for stream, known in point.clock.items():
            if known > clock.get(stream, -1):
                clock[stream] = known

    def _signal_after(self, producer: str, index: int) -> SignalPoint:
        points = self.signals.setdefault(producer, [])
        at = bisect.bisect_right([p.index for p in points], index)
        if at < len(points):
            return points[at]
        if producer not in self.semaphores:
            if len(self.semaphores) >= self.target.semaphores:
                raise NkiValidationError(
                    f"stream {producer} needs a semaphore but all {self.target.semaphores} "
                    f"semaphores of {self.target.name} are in use")
            self.semaphores[producer] = self.builder.semaphore()
        position = len(self.builder.streams.get(producer, ()))
        count = self.builder.signal(producer, self.semaphores[producer])
        clock = dict(self.clocks.get(producer, {}))
        clock[producer] = position - 1  # the signal follows every earlier instruction
        point = SignalPoint(position, count, clock)
        points.append(point)
        return point
