"""Running library kernels in tests: inputs from the registry record, one emulator run (race
checked), and the comparison with the record's golden at the record's tolerance for the dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from emulator.kernel_runner import benchmark, simulate
from kernels.library import LIBRARY


def run(name: str, shapes: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None, layout: Mapping[str, Any] | None = None,
        dtype: str = "fp32", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(result, golden) of library kernel `name`; the traced program is checked race-free."""
    entry = LIBRARY[name]
    arrays = entry.inputs(shapes, options, dtype, seed)
    result = simulate(entry.kernel, check_races=True)(*arrays,
                                                      **entry.kernel_kwargs(options, layout))
    return result, entry.reference(arrays, options)


def timed(name: str, shapes: Mapping[str, Any] | None = None,
          options: Mapping[str, Any] | None = None, layout: Mapping[str, Any] | None = None,
          dtype: str = "bf16", seed: int = 0):
    """(result, timing report) of library kernel `name`."""
    entry = LIBRARY[name]
    arrays = entry.inputs(shapes, options, dtype, seed)
    return benchmark(entry.kernel)(*arrays, **entry.kernel_kwargs(options, layout))


def assert_matches_golden(name: str, result: np.ndarray, golden: np.ndarray,
                          dtype: str) -> None:
    """Element-wise |result - golden| <= atol + rtol |golden| with the record's tolerance."""
    tolerance = LIBRARY[name].tolerance_for(dtype)
    assert result.shape == golden.shape, (result.shape, golden.shape)
    np.testing.assert_allclose(result.astype(np.float64), golden, rtol=tolerance.rtol,
                               atol=tolerance.atol, err_msg=f"{name} at {dtype}")


def instructions(report) -> int:
    """Instructions issued by every engine and DMA queue of the run."""
    return sum(engine.instructions for engine in report.cores[0].engines.values())
