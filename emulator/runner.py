"""User-facing runner: run a Program on an emulated NeuronCore and collect its results.

This is the layer above the machine core (memories, executor, timing): it resolves presets,
times the program, executes its values in the timed order, and bundles numbers and report
into one `Result`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from emulator.collector import collector_paused
from emulator.functional import FunctionalResult, execute
from emulator.machine import CoreSpec, InstanceSpec
from emulator.machine_file import machine as resolve_machine
from emulator.memory import DeviceMemory
from emulator.races import check_races
from emulator.report import Report, build_report
from emulator.timing import Schedule, schedule
from isa.program import Program


@dataclass
class Result:
    """What a run produced: output tensors (empty in timing-only mode) and its report."""

    program: Program
    outputs: dict[str, np.ndarray]
    report: Report | None = None
    functional: FunctionalResult | None = field(default=None, repr=False)

    @property
    def schedule(self) -> Schedule | None:
        return self.report.schedule if self.report is not None else None


def resolve_instance(machine: str | InstanceSpec | CoreSpec) -> InstanceSpec:
    """The instance a run uses: from a preset name or alias (`inf2.xlarge`, `inf1`), a `.toml`
    machine file, an InstanceSpec, or a bare CoreSpec (an inf2.xlarge whose cores are it)."""
    if isinstance(machine, CoreSpec):
        base = resolve_machine("inf2")
        return replace(base, chip=replace(base.chip, core=machine))
    return resolve_machine(machine)


def core_and_chip(machine: str | InstanceSpec | CoreSpec):
    """The core and chip of a single-core run on `machine` (see `resolve_instance`)."""
    instance = resolve_instance(machine)
    return instance.chip.core, instance.chip


@collector_paused()
def run(program: Program, inputs: dict[str, np.ndarray] | None = None,
        machine: str | InstanceSpec | CoreSpec = "inf2", *, functional: bool = True,
        timing: bool = True, rng: np.random.Generator | None = None,
        delay_ns: np.ndarray | None = None, check_initialized: bool = True,
        race_check: bool = True, hbm: DeviceMemory | None = None) -> Result:
    """Run `program` on one NeuronCore of `machine`: its output tensors and its report.

    `timing=False` skips the timing model; `functional=False` is timing-only mode (no data is
    allocated, `inputs` are ignored).  With timing on, values are computed in the order the
    timing model executed the instructions; `delay_ns` perturbs that timing per instruction.
    Without timing, `rng` picks a random legal interleaving of the streams.  `race_check`
    first proves that every conflicting access pair between streams is ordered by semaphores
    (`emulator.races`); an unsynchronised pair raises `RaceError` naming both instructions.
    `hbm` runs on an existing device memory (what earlier runs left there stays visible).
    """
    if not (functional or timing):
        raise ValueError("run needs functional=True, timing=True or both")
    instance = resolve_instance(machine)
    spec, chip = instance.chip.core, instance.chip
    program.validate(spec.target)
    if race_check:
        check_races(program)
    report = None
    order = None
    if timing:
        timed = schedule(program, spec, chip, delay_ns=delay_ns)
        report = build_report(timed, spec)
        report.machine = f"{instance.name} ({spec.name})"
    if not functional:
        return Result(program, {}, report)
    if timing and rng is None:
        order = timed.legal_order()
    result = execute(program, inputs or {}, spec.target, hbm=hbm, rng=rng,
                     check_initialized=check_initialized, order=order, validate=False)
    return Result(program, result.outputs, report, result)
