"""Graph-level collectives lowered to the ISA and run across the chips of an instance."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.machine import INSTANCES
from emulator.model_runner import compile_model
from emulator.system import run_system
from kernels.graph.ir import Graph
from kernels.graph.lowering import LoweringError

INSTANCE = INSTANCES["inf2.48xlarge"]
RANKS = (0, 2, 4)  # one core on each of three chips


def collective_graph(op: str, rows: int, axis: int = 0) -> Graph:
    g = Graph("collective")
    x = g.input("x", (rows, 64), "fp32")
    g.output("y", g.apply(op, x, group_size=len(RANKS), axis=axis))
    g.meta["collective_ranks"] = RANKS
    return g


def run_ranks(graph: Graph, xs: list[np.ndarray]):
    compiled, _ = compile_model(graph, INSTANCE)
    lowered = compiled.meta["lowered"]
    feeds = [lowered.feeds(compiled, {"x": x})[0] for x in xs]
    result = run_system([lowered.programs[0]] * len(RANKS), feeds, INSTANCE, ranks=list(RANKS))
    return {r: lowered.collect([result.outputs[r]])["y"] for r in RANKS}, result.report


def test_all_gather_concatenates_every_rank_along_axis_0():
    xs = [np.full((4, 64), float(r), np.float32) for r in RANKS]
    outputs, report = run_ranks(collective_graph("all_gather", 4), xs)
    for r in RANKS:
        np.testing.assert_array_equal(outputs[r], np.concatenate(xs))
    # Ring of 3 on a 12-chip ring: 2 steps, the way back from chip 2 to chip 0 is 2 hops.
    block = 4 * 64 * 4
    step = 2 * INSTANCE.link_latency_ns + block / INSTANCE.link_gbps
    assert report.latency_ns >= 2 * step


def test_reduce_scatter_gives_rank_i_block_i_of_the_sum():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((6, 64)).astype(np.float32) for _ in RANKS]
    outputs, _ = run_ranks(collective_graph("reduce_scatter", 6), xs)
    total = np.sum(xs, axis=0, dtype=np.float64)
    for i, r in enumerate(RANKS):
        np.testing.assert_allclose(outputs[r], total[2 * i:2 * i + 2], rtol=1e-6, atol=1e-6)


def test_other_axes_are_refused_naming_the_node():
    with pytest.raises(LoweringError, match=r"axis=1: only axis 0"):
        compile_model(collective_graph("all_gather", 4, axis=1), INSTANCE)
