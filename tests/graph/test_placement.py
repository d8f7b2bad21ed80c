"""HBM placement: live tensors never overlap, space is reused, the peak is reported."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given

from kernels.graph import Graph, Value, check
from kernels.graph import models as m
from kernels.graph.placement import ALIGN, HbmSlot, place_hbm
from tests.graph.strategies import random_graphs


def slots(g: Graph) -> dict[Value, HbmSlot]:
    return {Value(n, p): s for n in g.nodes for p, s in enumerate(g.annotations(n)["hbm"])}


def lifetimes(g: Graph) -> dict[Value, tuple[int, int]]:
    """(first, last) schedule step of every tensor, worked out from the graph directly."""
    order = g.meta["hbm"].schedule
    step = {n: i for i, n in enumerate(order)}
    outputs = set(g.outputs.values())
    spans = {}
    for n in order:
        op = g.op(n).op
        for p in range(len(g.types(n))):
            v = Value(n, p)
            readers = [step[reader] for _, reader, _, port
                       in g.nx.out_edges(n, keys=True, data="port") if port == p]
            first = 0 if op in ("input", "constant") else step[n]
            last = len(order) if v in outputs or op == "constant" else max(readers + [step[n]])
            spans[v] = (first, last)
    return spans


@given(random_graphs(max_ops=14))
def test_tensors_live_at_the_same_time_never_overlap(case):
    g, _ = case
    placed = place_hbm(g)
    check(placed)
    where, when = slots(placed), lifetimes(placed)
    assert set(where) == set(when)
    for v, slot in where.items():
        assert (slot.first, slot.last) == when[v]
        assert slot.size >= g.type_of(v).nbytes and slot.offset % ALIGN == 0
    weights_end = placed.meta["hbm"].weights_bytes
    for (u, a), (v, b) in itertools.combinations(where.items(), 2):
        assert (a.region == "weights") == (a.end <= weights_end)
        live_together = a.first <= b.last and b.first <= a.last
        if live_together:
            assert a.end <= b.offset or b.end <= a.offset, f"{u} {a} overlaps {v} {b}"
    # the reported peak is the largest sum of live activation bytes at any step
    steps = range(len(placed.meta["hbm"].schedule))
    peak = max(sum(s.size for s in where.values()
                   if s.region == "activations" and s.first <= i <= s.last) for i in steps)
    assert placed.meta["hbm"].activation_peak_bytes == peak
    assert peak <= placed.meta["hbm"].arena_bytes


def test_a_chain_reuses_two_buffers():
    g = Graph()
    h = g.input("x", (64, 64))  # 16 KiB
    for _ in range(10):
        h = g.apply("tanh", h)
    g.output("y", h)
    plan = place_hbm(g).meta["hbm"]
    assert plan.weights_bytes == 0
    assert plan.activation_peak_bytes == plan.arena_bytes == 2 * 64 * 64 * 4
    offsets = {s.offset for v, s in slots(place_hbm(g)).items()}
    assert offsets == {0, 64 * 64 * 4}


def test_freed_holes_are_reused_first_fit():
    g = Graph()
    x = g.input("x", (1024,))                     # 4 KiB at 0, dies at "big"
    big = g.apply("relu", x, name="big")          # 4 KiB above it, dies at "small"
    small = g.apply("slice", big, starts=(0,), ends=(256,), axes=(0,), name="small")
    g.output("y", g.apply("tanh", small, name="later"))
    placed = place_hbm(g)
    where = slots(placed)
    assert where[Value("x")].offset == 0 and where[Value("big")].offset == 4096
    assert where[Value("small")].offset == 0      # first fit: the hole x left
    assert where[Value("later")].offset == 1024   # the rest of that hole, merged with big's
    assert placed.meta["hbm"].arena_bytes == 8192


def test_weights_come_first_and_stay_live():
    g = m.mlp((16, 32, 8), batch=4)
    placed = place_hbm(g)
    plan = placed.meta["hbm"]
    where = slots(placed)
    weights = [s for s in where.values() if s.region == "weights"]
    # weights 16x32 and 32x8 fp32; biases of 32 and 8 fp32 rounded up to 64-byte multiples
    assert sum(s.size for s in weights) == plan.weights_bytes == 2048 + 128 + 1024 + 64
    assert all(s.first == 0 and s.last == len(plan.schedule) for s in weights)
    assert plan.total_bytes == plan.weights_bytes + plan.arena_bytes
    assert "activation peak" in str(plan)


def test_slot_records_validate_themselves():
    with pytest.raises(ValueError, match="aligned"):
        HbmSlot("activations", 3, 64, 0, 1)
    with pytest.raises(ValueError, match="region"):
        HbmSlot("sbuf", 0, 64, 0, 1)
    with pytest.raises(ValueError, match="from step 2 to 1"):
        HbmSlot("weights", 0, 64, 2, 1)
