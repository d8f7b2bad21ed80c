"""An NKI-compatible kernel language that traces to `isa.Program`s (the current, destination-
passing NKI API; reference/nki-api.md lists the subset).

    from kernels.nki import isa as nisa, jit, language as nl

    @jit
    def add_kernel(a, b):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        ...
        return out

Run kernels with `emulator.kernel_runner.simulate(add_kernel)(a, b)` (numbers),
`benchmark(...)` (numbers and a timing report) or `trace(...)` (the programs).

The legacy, value-returning API (neuronxcc.nki) shares the language and the tracer:
`kernels.nki.legacy` is its `nki.isa`; index vectors and masks live in `kernels.nki.index`.
`emulator.kernel_runner.run_nki_file` (and `ncemu nki`) runs an unmodified NKI source file,
mapping its `nki` / `neuronxcc.nki` imports onto this package for that run
(`emulator.nki_compat`, in the runner layer).
"""

from kernels.nki import isa, language
from kernels.nki.errors import (
    AllocationError,
    NkiError,
    NkiValidationError,
    TileIndexError,
    TracingError,
    UnsupportedConstructError,
)
from kernels.nki.kernel import Kernel, Launch, jit
from kernels.nki.tensor import NkiTensor

__all__ = [
    "AllocationError", "Kernel", "Launch", "NkiError", "NkiTensor", "NkiValidationError",
    "TileIndexError", "TracingError", "UnsupportedConstructError", "isa", "jit", "language",
]
