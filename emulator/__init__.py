"""The machine that executes programs: presets, memories, engines, timing, reports; and on top
of it the runners users call."""

from emulator.kernel_runner import GridReport, benchmark, simulate, trace
from emulator.runner import Result, run
from emulator.system import SystemResult, run_system

__all__ = ["GridReport", "Result", "SystemResult", "benchmark", "run", "run_system", "simulate",
           "trace"]
