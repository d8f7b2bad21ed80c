"""HBM placement: an offset and size for every tensor in one device-memory arena.

Weights (constants) sit first, each for the whole run.  Activations (graph inputs and operator
outputs) follow in an arena managed by a linear scan over the schedule (the graph's topological
order): at step i the outputs of node i are placed first-fit into the free holes (or at the top of
the arena), then every tensor whose last reader is node i frees its space.  Inputs are live from
the start (the host writes them before the run), outputs to the end, and a tensor nobody reads
is live only at the step that writes it.  Two tensors live at the same step never overlap.
Sizes are rounded up to ALIGN bytes.  A reshape is placed as a copy, like every other op.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernels.graph.ir import Graph
from kernels.graph.tensor import GraphError, Value

ALIGN = 64  # bytes; chosen so every tensor starts on a cache-line-sized boundary


@dataclass(frozen=True)
class HbmSlot:
    """Where one tensor lives in HBM and when: bytes [offset, offset + size) during schedule
    steps first..last (inclusive)."""

    region: str  # "weights" or "activations"
    offset: int
    size: int
    first: int
    last: int

    def __post_init__(self) -> None:
        if self.region not in ("weights", "activations"):
            raise GraphError(f"HBM region {self.region!r} must be weights or activations")
        if self.offset < 0 or self.size < 0 or self.offset % ALIGN:
            raise GraphError(f"HBM slot offset {self.offset} / size {self.size} must be "
                             f">= 0 and aligned to {ALIGN}")
        if self.last < self.first:
            raise GraphError(f"HBM slot lives from step {self.first} to {self.last}")

    @property
    def end(self) -> int:
        return self.offset + self.size

    def __str__(self) -> str:
        return f"{self.region}@{self.offset}+{self.size} steps {self.first}..{self.last}"


@dataclass(frozen=True)
class HbmPlan:
    """The placement's totals: weights, the activation peak (largest sum of live activation
    bytes at one step), the arena the allocator used (>= peak when holes fragment), total."""

    weights_bytes: int
    activation_peak_bytes: int
    arena_bytes: int
    total_bytes: int
    schedule: tuple[str, ...]

    def __str__(self) -> str:
        return (f"weights {self.weights_bytes} B, activation peak {self.activation_peak_bytes} B"
                f", arena {self.arena_bytes} B, total {self.total_bytes} B")


def _aligned(nbytes: int) -> int:
    return max(ALIGN, -(-nbytes // ALIGN) * ALIGN)


class _Arena:
    """First-fit allocation in a growing arena, with coalescing free holes."""

    def __init__(self) -> None:
        self.holes: list[tuple[int, int]] = []  # (offset, size), sorted, non-adjacent
        self.top = 0

    def allocate(self, size: int) -> int:
        for i, (offset, hole) in enumerate(self.holes):
            if hole >= size:
                if hole == size:
                    del self.holes[i]
                else:
                    self.holes[i] = (offset + size, hole - size)
                return offset
        if self.holes and self.holes[-1][0] + self.holes[-1][1] == self.top:
            offset, _ = self.holes.pop()  # grow the arena from its last hole
        else:
            offset = self.top
        self.top = offset + size
        return offset

    def free(self, offset: int, size: int) -> None:
        holes = sorted(self.holes + [(offset, size)])
        merged: list[tuple[int, int]] = []
        for start, length in holes:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((start, length))
        self.holes = merged


def place_hbm(graph: Graph) -> Graph:
    """Annotate each node with an `HbmSlot` per output and the graph with an `HbmPlan`."""
    g = graph.copy()
    schedule = g.nodes
    end = len(schedule)
    step_of = {node: i for i, node in enumerate(schedule)}
    outputs = set(g.outputs.values())
    last: dict[Value, int] = {}
    for node in schedule:
        for port in range(len(g.types(node))):
            value = Value(node, port)
            readers = [step_of[v] for v, _ in g.consumers(value)]
            last[value] = end if value in outputs else max(readers, default=step_of[node])

    slots: dict[str, list[HbmSlot]] = {n: [] for n in schedule}
    weights = 0
    for node in schedule:
        if g.op(node).op == "constant":
            size = _aligned(g.types(node)[0].nbytes)
            slots[node].append(HbmSlot("weights", weights, size, 0, end))
            weights += size
    base = weights
    arena = _Arena()
    live: dict[Value, HbmSlot] = {}
    live_bytes = peak = 0

    def place(value: Value, first: int) -> None:
        nonlocal live_bytes, peak
        size = _aligned(g.type_of(value).nbytes)
        slot = HbmSlot("activations", base + arena.allocate(size), size, first, last[value])
        slots[value.node].append(slot)
        live[value] = slot
        live_bytes += size
        peak = max(peak, live_bytes)

    def release(step: int) -> None:
        nonlocal live_bytes
        for value in [v for v, s in live.items() if s.last == step]:
            slot = live.pop(value)
            arena.free(slot.offset - base, slot.size)
            live_bytes -= slot.size

    for node in schedule:  # inputs are written by the host before step 0
        if g.op(node).op == "input":
            place(Value(node), 0)
    for step, node in enumerate(schedule):
        if g.op(node).op not in ("input", "constant"):
            for port in range(len(g.types(node))):
                place(Value(node, port), step)
        release(step)
    for node, node_slots in slots.items():
        g.annotate(node, "hbm", tuple(node_slots))
    g.meta["hbm"] = HbmPlan(weights, peak, arena.top, base + arena.top, tuple(schedule))
    return g
