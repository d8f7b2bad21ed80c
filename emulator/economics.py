"""What it costs to serve: throughput and price per million inferences on an instance.

A model compiled for `cores_per_replica` NeuronCores is served by as many replicas as the
instance has room for, all working at once; each replica finishes `batch` inferences every
`latency_ns`.  Cost per million inferences is the instance's hourly price spread over the
inferences it completes in that hour.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator.machine import InstanceSpec


@dataclass(frozen=True)
class Economics:
    """Serving figures of one model on one instance."""

    instance: str
    batch: int
    latency_ns: float  # one batch through one replica
    replicas: int
    throughput_per_s: float  # inferences per second, whole instance
    price_per_hour: float
    cost_per_million: float  # USD per 1e6 inferences

    def to_json(self) -> dict:
        return dict(vars(self))


def economics(instance: InstanceSpec, latency_ns: float, batch: int,
              cores_per_replica: int = 1) -> Economics:
    """Throughput and cost of serving with every core of `instance` busy."""
    if latency_ns <= 0:
        raise ValueError(f"latency_ns={latency_ns} must be > 0")
    if batch < 1:
        raise ValueError(f"batch={batch} must be >= 1")
    if not 1 <= cores_per_replica <= instance.cores:
        raise ValueError(f"cores_per_replica={cores_per_replica} must be in 1..{instance.cores} "
                         f"(the cores of {instance.name})")
    replicas = instance.cores // cores_per_replica
    throughput = replicas * batch / (latency_ns * 1e-9)
    cost = instance.price_per_hour / 3600.0 / throughput * 1e6
    return Economics(instance.name, batch, latency_ns, replicas, throughput,
                     instance.price_per_hour, cost)
