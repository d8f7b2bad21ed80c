"""Tracing NKI-style kernels into `isa.Program`s: allocation, hazards, semaphores, SPMD.

`trace_kernel(kernel, args, kwargs)` runs a kernel under a `Tracer` and returns a
`TracedKernel`: one Program per SPMD program id plus the kernel's HBM interface.
"""

from kernels.trace.allocator import ALIGNMENT, Allocator, Block
from kernels.trace.hazards import AccessLog, Region
from kernels.trace.sync import Synchroniser
from kernels.trace.tracer import HbmTensor, TensorSpec, TracedKernel, Tracer, trace_kernel

__all__ = [
    "ALIGNMENT", "AccessLog", "Allocator", "Block", "HbmTensor", "Region", "Synchroniser",
    "TensorSpec", "TracedKernel", "Tracer", "trace_kernel",
]
