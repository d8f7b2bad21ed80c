"""NeuronLink: the chips of an instance, the links between them, and collectives over them.

The topology is a networkx graph of chips (ring on inf2.24xlarge/48xlarge, chain on multi-chip
inf1, 4x4 2-D torus on trn1.32xlarge [I1][I2][T1]); every link carries `link_gbps` bytes per ns
in each direction and adds `link_latency_ns` per hop.  Cores on the same chip exchange data
through device memory with their DMA engines instead.  Collectives run the ring algorithm over
the ranks in ring order: each step every rank sends one chunk to its successor over the shortest
route, and a step lasts as long as its slowest transfer (hops x latency + chunk x the busiest
link's load / bandwidth).  All-reduce takes 2(n-1) steps of S/n bytes, all-gather and
reduce-scatter n-1 steps; on a ring that is 2(n-1)/n * S / bandwidth + 2(n-1) * latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import networkx as nx

from emulator.machine import InstanceSpec

Link = tuple[int, int]  # (from chip, to chip), one direction of a NeuronLink


@dataclass(frozen=True)
class Transfer:
    """Time and link use of one collective or point-to-point transfer."""

    duration_ns: float
    steps: int
    link_bytes: dict[Link, float]  # bytes each directed link carried
    local_bytes: float  # bytes moved between cores of one chip (through device memory)


class Topology:
    """Chips and NeuronLinks of one instance, with routes and ring orders."""

    def __init__(self, instance: InstanceSpec) -> None:
        self.instance = instance
        self.graph = self._build(instance)

    @staticmethod
    def _build(instance: InstanceSpec) -> nx.Graph:
        n = instance.chips
        if instance.topology == "single":
            graph = nx.empty_graph(1)
        elif instance.topology == "ring":
            graph = nx.cycle_graph(n)
        elif instance.topology == "chain":
            graph = nx.path_graph(n)
        else:
            rows, cols = instance.torus
            torus = nx.grid_2d_graph(rows, cols, periodic=True)
            graph = nx.relabel_nodes(torus, {(r, c): r * cols + c for r, c in torus.nodes})
        return graph

    def chip_of(self, rank: int) -> int:
        cores = self.instance.chip.cores
        if not 0 <= rank < self.instance.chips * cores:
            raise ValueError(f"core {rank} does not exist on {self.instance.name}, which has "
                             f"{self.instance.chips * cores} cores")
        return rank // cores

    @cached_property
    def _paths(self) -> dict[int, dict[int, list[int]]]:
        return dict(nx.all_pairs_shortest_path(self.graph))

    def route(self, source: int, destination: int) -> list[Link]:
        """Directed links from chip `source` to chip `destination` (shortest path)."""
        path = self._paths[source][destination]
        return list(zip(path, path[1:]))

    @cached_property
    def chip_ring(self) -> list[int]:
        """An order of the chips in which neighbours are linked wherever the topology allows."""
        if self.instance.topology == "torus2d":
            rows, cols = self.instance.torus
            # Boustrophedon: along each row, back along the next, so neighbours are adjacent.
            return [r * cols + (c if r % 2 == 0 else cols - 1 - c)
                    for r in range(rows) for c in range(cols)]
        return list(range(self.instance.chips))

    def ring_order(self, ranks: tuple[int, ...]) -> list[int]:
        """The ranks ordered around the ring: by chip along `chip_ring`, then by core."""
        position = {chip: i for i, chip in enumerate(self.chip_ring)}
        return sorted(ranks, key=lambda r: (position[self.chip_of(r)], r))

    def step(self, pairs: list[tuple[int, int]], chunk_bytes: float, local_gbps: float,
             local_latency_ns: float) -> tuple[float, dict[Link, float], float]:
        """One step in which each (sender, receiver) pair of ranks moves `chunk_bytes`."""
        load: dict[Link, int] = {}
        routes = []
        for sender, receiver in pairs:
            route = self.route(self.chip_of(sender), self.chip_of(receiver))
            routes.append(route)
            for link in route:
                load[link] = load.get(link, 0) + 1
        bw, latency = self.instance.link_gbps, self.instance.link_latency_ns
        slowest, local = 0.0, 0.0
        for route in routes:
            if route:
                busiest = max(load[link] for link in route)
                slowest = max(slowest, len(route) * latency + chunk_bytes * busiest / bw)
            else:  # same chip: through device memory with the DMA engines
                slowest = max(slowest, local_latency_ns + chunk_bytes / local_gbps)
                local += chunk_bytes
        return slowest, {link: count * chunk_bytes for link, count in load.items()}, local

    def _local(self) -> tuple[float, float]:
        core = self.instance.chip.core
        return core.dma_engines * core.dma_engine_gbps, core.dma_fixed_ns

    def ring_collective(self, kind: str, ranks: tuple[int, ...], nbytes: float) -> Transfer:
        """Time of a ring all_reduce / all_gather / reduce_scatter.

        `nbytes` is the size of the full vector: the src (and dst) of all-reduce, the dst of
        all-gather, the src of reduce-scatter.
        """
        n = len(ranks)
        if n == 1:
            return Transfer(0.0, 0, {}, 0.0)
        steps = {"all_reduce": 2 * (n - 1), "all_gather": n - 1, "reduce_scatter": n - 1}[kind]
        order = self.ring_order(ranks)
        pairs = list(zip(order, order[1:] + order[:1]))
        duration, links, local = self.step(pairs, nbytes / n, *self._local())
        return Transfer(duration * steps, steps, {k: v * steps for k, v in links.items()},
                        local * steps)

    def point_to_point(self, sender: int, receiver: int, nbytes: float) -> Transfer:
        duration, links, local = self.step([(sender, receiver)], nbytes, *self._local())
        return Transfer(duration, 1, links, local)
