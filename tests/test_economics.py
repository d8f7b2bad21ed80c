"""Serving economics: arithmetic written out, and the error paths."""

from __future__ import annotations

import pytest

from emulator.economics import economics
from emulator.machine import INSTANCES


def test_cost_per_million_on_inf2_xlarge():
    # 2 cores, one replica each, batch 4 every 2 ms: 2 * 4 / 0.002 = 4000 inferences/s.
    # $0.76 per hour = 0.76 / 3600 $/s; per inference 0.76 / 3600 / 4000; x 1e6 = $0.05278.
    e = economics(INSTANCES["inf2.xlarge"], 2e6, batch=4)
    assert e.replicas == 2
    assert e.throughput_per_s == pytest.approx(4000.0)
    assert e.cost_per_million == pytest.approx(0.76 / 3600 / 4000 * 1e6)


def test_replicas_fill_the_instance():
    # inf2.48xlarge has 24 cores: a 4-core model is served by 6 replicas.
    e = economics(INSTANCES["inf2.48xlarge"], 1e6, batch=1, cores_per_replica=4)
    assert e.replicas == 6 and e.throughput_per_s == pytest.approx(6000.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"latency_ns": 0.0, "batch": 1}, "latency_ns=0.0 must be > 0"),
    ({"latency_ns": 1.0, "batch": 0}, "batch=0 must be >= 1"),
    ({"latency_ns": 1.0, "batch": 1, "cores_per_replica": 3},
     r"cores_per_replica=3 must be in 1..2 \(the cores of inf2.xlarge\)"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        economics(INSTANCES["inf2.xlarge"], **kwargs)
