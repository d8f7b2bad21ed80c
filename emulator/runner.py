"""User-facing runner: run a Program on an emulated NeuronCore and collect its results.

This is the layer above the machine core (memories, executor, timing): it resolves presets,
prepares inputs and bundles numbers and report into one `Result`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emulator.functional import FunctionalResult, execute
from emulator.machine import CoreSpec, core_spec
from isa.program import Program


@dataclass
class Result:
    """What a run produced: output tensors (empty in timing-only mode) and the run's details."""

    program: Program
    outputs: dict[str, np.ndarray]
    functional: FunctionalResult | None = field(default=None, repr=False)


def run(program: Program, inputs: dict[str, np.ndarray] | None = None,
        target: str | CoreSpec = "inf2", *, rng: np.random.Generator | None = None,
        check_initialized: bool = True) -> Result:
    """Execute `program` on one NeuronCore of `target` and return its output tensors.

    `rng` picks a random legal interleaving of the engine streams (a race-free program gives
    the same outputs under every one); by default streams run round robin.
    """
    spec = core_spec(target)
    functional = execute(program, inputs or {}, spec.target, rng=rng,
                         check_initialized=check_initialized)
    return Result(program, functional.outputs, functional)
