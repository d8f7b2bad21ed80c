"""Run NKI-style kernels on the emulator: numbers (`simulate`), numbers and time (`benchmark`),
or the traced programs (`trace`).

`simulate(kernel)(*arrays)` traces the kernel for the arrays' shapes and dtypes and executes
the program(s) functionally; like NKI's CPU simulator it returns a single output bare, several as
a tuple, and writes outputs the kernel stores into its parameters back into those arrays.
`benchmark` also times each program on one NeuronCore and returns the timing report.  Both
check every traced program with the race detector before running it: the tracer promises
race-free programs, and the check keeps that promise honest.

`run_nki_file(path, kernel_name, inputs)` runs a kernel from an unmodified NKI source file (what
`ncemu nki` does): the file's `import nki` / `neuronxcc.nki` names are mapped onto
`kernels.nki` for that run only (`kernels.nki.compat`).

SPMD launches (`kernel[grid]`) trace one Program per program id.  On one NeuronCore the
instances run one after another, in row-major grid order, over one shared device memory: an
instance sees in HBM what earlier ones wrote.  A grid's report lists each instance's report and
a total latency that is their sum (sequential execution on one core, no overlap between
instances).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emulator import nki_compat as compat
from emulator import races
from emulator.functional import execute
from emulator.memory import DeviceMemory
from emulator.report import Report
from emulator.runner import core_and_chip, run
from isa.program import Program
from kernels.nki.kernel import unwrap
from kernels.trace import TensorSpec, TracedKernel, trace_kernel

REPORT_SCHEMA = "ncemu.grid_report/1"


@dataclass(frozen=True)
class GridReport:
    """Timing of an SPMD launch run sequentially on one core: one report per program."""

    kernel: str
    grid: tuple[int, ...]
    programs: tuple[Report, ...]

    @property
    def latency_ns(self) -> float:
        """Sum of the instances' latencies: they run one after another on one core."""
        return float(sum(r.latency_ns for r in self.programs))

    def text(self) -> str:
        lines = [f"{self.kernel}{list(self.grid)}: {len(self.programs)} program instances run "
                 f"sequentially on one core, total latency {self.latency_ns / 1e3:.3f} us"]
        lines += [report.text() for report in self.programs]
        return "\n".join(lines)

    def chrome_trace(self) -> dict:
        """One trace with a process per program instance, each starting where the previous one
        ended (they run one after another on the core)."""
        events, start_us = [], 0.0
        for instance, report in enumerate(self.programs):
            for event in report.chrome_trace()["traceEvents"]:
                event = {**event, "pid": instance}
                if "ts" in event:
                    event["ts"] += start_us
                events.append(event)
            start_us += report.latency_ns / 1e3
        return {"traceEvents": events, "displayTimeUnit": "ns"}

    def to_json(self) -> dict:
        return {"schema": REPORT_SCHEMA, "kernel": self.kernel, "grid": list(self.grid),
                "execution": "sequential on one core", "latency_ns": self.latency_ns,
                "programs": [report.to_json() for report in self.programs]}


def simulate(kernel: Any, target: str = "inf2", *,
             check_races: bool = True) -> Callable[..., Any]:
    """`simulate(kernel)(*arrays, **kwargs)`: the kernel's outputs as numpy arrays.  Each traced
    program is first checked race-free (`emulator.races`; `check_races=False` skips it)."""

    def runner(*args: Any, **kwargs: Any) -> Any:
        traced = trace_kernel(kernel, args, kwargs, _target(target))
        outputs, _ = _execute(traced, target, timing=False, check=check_races)
        return outputs

    return runner


def benchmark(kernel: Any, target: str = "inf2", *,
              check_races: bool = True) -> Callable[..., tuple[Any, Report | GridReport]]:
    """`benchmark(kernel)(*arrays)`: (outputs as `simulate` returns them, timing report); the
    report is a `GridReport` for an SPMD launch of more than one program."""

    def runner(*args: Any, **kwargs: Any) -> tuple[Any, Report | GridReport]:
        traced = trace_kernel(kernel, args, kwargs, _target(target))
        outputs, reports = _execute(traced, target, timing=True, check=check_races)
        if len(reports) == 1:
            return outputs, reports[0]
        return outputs, GridReport(traced.name, traced.grid, tuple(reports))

    return runner


def trace(kernel: Any, *args: Any, target: str = "inf2",
          **kwargs: Any) -> Program | tuple[Program, ...]:
    """The Program a kernel traces to (a tuple of them for an SPMD grid).  Tensor arguments
    may be arrays, `TensorSpec`s or shape tuples (float32); other values pass through."""
    args = tuple(TensorSpec(a) if _is_shape(a) else a for a in args)
    traced = trace_kernel(kernel, args, kwargs, _target(target))
    return traced.programs[0] if len(traced.programs) == 1 else traced.programs


def _target(machine: str):
    return core_and_chip(machine)[0].target


def _is_shape(value: Any) -> bool:
    return isinstance(value, tuple) and bool(value) and all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in value)


def _execute(traced: TracedKernel, machine: str, timing: bool,
             check: bool) -> tuple[Any, list[Report]]:
    """Run every program instance over one shared HBM; outputs shaped like NKI returns them."""
    spec = core_and_chip(machine)[0]
    inputs = {name: np.asarray(value) for name, value in traced.arguments
              if name in traced.inputs}
    hbm = DeviceMemory()
    reports: list[Report] = []
    for program in traced.programs:
        if check:
            races.check_races(program)
        order = None
        if timing:
            report = run(program, machine=machine, functional=False).report
            reports.append(report)
            order = report.schedule.legal_order()
        execute(program, inputs, spec.target, hbm=hbm, order=order)
    for name, value in traced.arguments:
        if name in traced.written_parameters:
            _write_back(name, value, hbm.load(name))
    results = tuple(hbm.load(name) for name in traced.outputs)
    if traced.returns == "none":
        return None, reports
    if traced.returns == "single":
        return results[0], reports
    return results, reports


def _write_back(name: str, argument: Any, values: np.ndarray) -> None:
    """An output the kernel wrote into a parameter goes back into the caller's array."""
    if not isinstance(argument, np.ndarray) or not argument.flags.writeable:
        raise ValueError(f"kernel writes its parameter {name}, but the argument passed for it "
                         f"is not a writeable numpy array")
    np.copyto(argument, values, casting="unsafe")


@dataclass(frozen=True)
class NkiFileRun:
    """A kernel of an NKI source file run on the emulator: its outputs by position
    (`out0`, `out1`, ...: the returned tensors, or the parameters it wrote when it returns
    nothing) and its timing report (None when run without timing)."""

    kernel: str
    grid: tuple[int, ...]
    outputs: dict[str, np.ndarray]
    report: Report | GridReport | None
    instructions: int  # over all program instances, semaphore waits and signals included
    streams: int


def run_nki_file(path: str, kernel_name: str,
                 inputs: Mapping[str, Any] | Sequence[Any] = (), *,
                 grid: Sequence[int] | None = None, machine: str = "inf2", timing: bool = True,
                 check_races: bool = True) -> NkiFileRun:
    """Run kernel `kernel_name` of the NKI file `path` on `inputs`: a mapping whose keys are
    the kernel's parameter names (passed by name), any other mapping (its values passed in
    order, as `arg0, arg1, ...` of an .npz), or a sequence.  0-d arrays are passed as Python
    numbers.  `grid=(2, 3)` launches `kernel[2, 3]`.  The file's NKI imports are mapped onto
    this emulator for the run only; the input arrays are not modified."""
    with compat.nki_imports(machine):
        module = compat.load_kernel_file(path)
        kernel = compat.kernel_of(module, kernel_name, path)
        launch = kernel[tuple(grid)] if grid else kernel
        args, kwargs = _bind_inputs(unwrap(launch)[0], inputs)
        traced = trace_kernel(launch, args, kwargs, _target(machine))
        returned, reports = _execute(traced, machine, timing=timing, check=check_races)
    if traced.returns == "none":
        written = dict(traced.arguments)
        values = [np.asarray(written[name]) for name in traced.written_parameters]
    else:
        values = list(returned) if traced.returns == "tuple" else [returned]
    report = None
    if reports:
        report = reports[0] if len(reports) == 1 else GridReport(traced.name, traced.grid,
                                                                 tuple(reports))
    streams = {stream.name for program in traced.programs for stream in program.streams}
    return NkiFileRun(traced.name, traced.grid,
                      {f"out{k}": value for k, value in enumerate(values)}, report,
                      sum(p.instruction_count for p in traced.programs), len(streams))


def _bind_inputs(function: Callable[..., Any],
                 inputs: Mapping[str, Any] | Sequence[Any]) -> tuple[tuple, dict]:
    """(args, kwargs) for the kernel: by parameter name when every key names a parameter,
    else positionally; arrays are copied (outputs written into parameters go to the copies)."""

    def value(item: Any) -> Any:
        array = np.array(item)
        return array.item() if array.ndim == 0 else array

    signature = inspect.signature(function)
    names = list(inputs) if isinstance(inputs, Mapping) else []
    if names and all(key in signature.parameters for key in names):
        args, kwargs = (), {key: value(item) for key, item in inputs.items()}
    else:
        items = inputs.values() if isinstance(inputs, Mapping) else inputs
        args, kwargs = tuple(value(item) for item in items), {}
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        given = f"inputs {', '.join(names)}" if names else f"{len(args)} inputs"
        raise TypeError(f"kernel {function.__name__}{signature}: {err} (given {given})") from None
    return args, kwargs
