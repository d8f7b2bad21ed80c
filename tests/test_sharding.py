"""Tensor parallelism: Megatron-sharded BERT layers over 2, 4 and 12 Inf2 chips compute the
single-core numbers, and their all-reduces cost what the ring model predicts."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.interconnect import Topology
from emulator.machine import INSTANCES
from emulator.model_runner import run_model, tp_ranks
from kernels.graph import models
from kernels.graph.sharding import tensor_parallel
from kernels.graph.tensor import GraphError

CONFIG = models.BertConfig(layers=1, hidden=192, heads=12, ffn=768, seq_len=16, vocab=100,
                           max_positions=32)
INSTANCE = INSTANCES["inf2.48xlarge"]


@pytest.fixture(scope="module")
def single():
    return run_model(models.bert(CONFIG), machine=INSTANCE).outputs["last_hidden_state"]


def test_rank_graphs_shard_heads_and_insert_all_reduces():
    graphs = tensor_parallel(models.bert(CONFIG), 4)
    g = graphs[1]
    assert g.types("layer0/attention")[0].shape == (1, 3, 16, 16)  # 12 heads / 4
    assert g.types("layer0/intermediate")[0].shape == (1, 16, 192)  # 768 / 4 columns
    reduces = [n for n in g.nodes if g.op(n).op == "all_reduce"]
    assert reduces == ["layer0/attention.output.all_reduce", "layer0/output.all_reduce"]
    full = models.bert(CONFIG).constant_value("layer0/output.weight")
    np.testing.assert_array_equal(g.constant_value("layer0/output.weight.tp1"), full[192:384])


def test_indivisible_heads_fail():
    with pytest.raises(GraphError, match="divide"):
        tensor_parallel(models.bert(CONFIG), 5)


def ring_neighbour_hops(ranks):
    topo = Topology(INSTANCE)
    order = topo.ring_order(tuple(ranks))
    return max(len(topo.route(topo.chip_of(a), topo.chip_of(b)))
               for a, b in zip(order, order[1:] + order[:1]))


@pytest.mark.parametrize("n", [2, 4, 12])
def test_tensor_parallel_matches_single_core_and_ring_time(single, n):
    result = run_model(models.bert(CONFIG), machine=INSTANCE, tensor_parallel=n)
    out = result.outputs["last_hidden_state"]
    assert np.abs(out - single).max() <= 1e-4 * np.abs(single).max()
    c = result.report.collectives
    assert c["count"] == 2 and c["ranks"] == tp_ranks(INSTANCE, n)
    size = CONFIG.seq_len * CONFIG.hidden * 4
    hops = ring_neighbour_hops(c["ranks"])  # 1 on a ring of all chips or of 2; 3 for 4 of 12
    predicted = (2 * (n - 1) / n * size / INSTANCE.link_gbps
                 + 2 * (n - 1) * hops * INSTANCE.link_latency_ns)
    for duration in c["durations_ns"]:
        assert duration == pytest.approx(predicted, rel=0.05)
    if n in (2, 12):  # a true ring: the textbook formula
        ring = 2 * (n - 1) / n * size / INSTANCE.link_gbps + 2 * (n - 1) * INSTANCE.link_latency_ns
        assert c["durations_ns"][0] == pytest.approx(ring, rel=0.05)
    assert c["link_bytes"] > 0 and 0 < c["share"] < 1


def test_all_reduce_time_grows_with_chips():
    times = [run_model(models.bert(CONFIG), machine=INSTANCE, functional=False,
                       tensor_parallel=n).report.collectives["durations_ns"][0]
             for n in (2, 4, 12)]
    assert times[0] < times[1] < times[2]


def test_packed_ranks_and_errors():
    assert tp_ranks(INSTANCE, 4, packed=True) == [0, 1, 2, 3]
    with pytest.raises(GraphError, match="chips"):
        tp_ranks(INSTANCE, 13)
