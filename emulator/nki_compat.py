"""Running unmodified NKI kernel files: the `nki` / `neuronxcc.nki` import names mapped onto the
kernel language for the duration of one run.

    with nki_imports():                     # `import nki.language as nl` now gives ours
        module = load_kernel_file(path)

Inside `nki_imports()` the names below resolve to `kernels.nki`; everything is put back when the
block ends (sys.modules entries and the meta-path finder are removed, earlier entries restored),
so `import nki` outside it behaves as before.  Nothing is installed at import time.

| import name | what it gives |
|---|---|
| `nki`, `neuronxcc.nki` | `jit`, `simulate(_kernel)`, `baremetal`, `benchmark`, submodules |
| `nki.language`, `neuronxcc.nki.language` | `kernels.nki.language` (both generations) |
| `nki.isa` | `kernels.nki.isa` (destination passing) |
| `neuronxcc.nki.isa` | `kernels.nki.legacy` (value returning) |
| `nki.compiler`, `neuronxcc.nki.compiler` | directives accepted as no-ops |
| `nki.typing`, `neuronxcc.nki.typing` | `tensor[...]` annotations, ignored |

Other names under `nki.` or `neuronxcc.` fail to import with a message naming them.  Inside a
file, `nki.simulate(kernel)(*arrays)`, `nki.simulate_kernel`, `nki.baremetal` and a `@nki.jit`
kernel called directly run the kernel functionally on the emulator; `nki.benchmark(...)` runs it
with the timing model and returns the report.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.abc
import importlib.util
import itertools
import os
import sys
import traceback
import types
from collections.abc import Callable, Iterator
from typing import Any

from kernels.nki import isa as current_isa
from kernels.nki import language, legacy
from kernels.nki.errors import TracingError, UnsupportedConstructError
from kernels.nki.kernel import Kernel, Launch

# The machine the runners inside a kernel file use (set by `nki_imports`).
_MACHINE: contextvars.ContextVar[str] = contextvars.ContextVar("nki_machine", default="inf2")
_ROOTS = ("nki", "neuronxcc")
_ABSENT = object()
_file_counter = itertools.count()


# ---- runners a kernel file may call ------------------------------------------------------------
def _outputs(kernel: Any, args: tuple, kwargs: dict) -> Any:
    from emulator.kernel_runner import simulate as run_simulate
    return run_simulate(kernel, _MACHINE.get())(*args, **kwargs)


def _report(kernel: Any, args: tuple, kwargs: dict) -> Any:
    from emulator.kernel_runner import benchmark as run_benchmark
    return run_benchmark(kernel, _MACHINE.get())(*args, **kwargs)


class FileKernel(Kernel):
    """`@nki.jit` inside a kernel file: calling it directly (outside a trace) runs it on the
    emulator and returns its outputs, as NKI's simulation mode does."""

    def __getitem__(self, grid: Any) -> FileLaunch:
        launch = super().__getitem__(grid)
        return FileLaunch(launch.kernel, launch.grid)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _inside_trace():
            return self.function(*args, **kwargs)
        return _outputs(self, args, kwargs)


class FileLaunch(Launch):
    """`kernel[grid]` of a FileKernel: called directly, it runs on the emulator."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _outputs(self, args, kwargs)


def _inside_trace() -> bool:
    from kernels.nki import context
    return context.active()


def jit(function: Callable[..., Any] | None = None, **options: Any) -> Any:
    """`@nki.jit`, `@nki.jit()` or `@nki.jit(mode=..., platform_target=...,
    additional_compile_opt=...)`: compiler options are accepted and ignored."""
    if function is None:
        return lambda f: FileKernel(f, options)
    return FileKernel(function, options)


def simulate(kernel: Any) -> Callable[..., Any]:
    """`nki.simulate(kernel)(*arrays)`: the kernel's outputs, computed by the emulator."""
    return lambda *args, **kwargs: _outputs(kernel, args, kwargs)


def simulate_kernel(kernel: Any, *args: Any, **kwargs: Any) -> Any:
    """`nki.simulate_kernel(kernel, *arrays)` (legacy): the kernel's outputs."""
    return _outputs(kernel, args, kwargs)


def _decorator(make: Callable[[Any, dict], Any]) -> Callable[..., Any]:
    """A decorator usable bare (`@d`), called (`@d(...)`) or on a kernel (`d(kernel)`)."""

    def decorate(kernel: Any = None, **options: Any) -> Any:
        if kernel is None:
            return lambda k: make(k, options)
        return make(kernel, options)

    return decorate


class BaremetalRun:
    """`nki.baremetal(kernel)`: calling it runs the kernel (here: on the emulator)."""

    def __init__(self, kernel: Any, options: dict) -> None:
        self.kernel, self.options = kernel, options
        functools.update_wrapper(self, getattr(kernel, "function", kernel))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _outputs(self.kernel, args, kwargs)


class _Latency:
    """NKI's `benchmark_result.nc_latency`: our model is deterministic, so every percentile is
    the modelled latency (in microseconds, as NKI reports it)."""

    def __init__(self, latency_ns: float) -> None:
        self.latency_ns = latency_ns

    def get_latency_percentile(self, percentile: float) -> float:
        return self.latency_ns / 1e3


class _BenchmarkResult:
    def __init__(self, report: Any) -> None:
        self.report = report
        self.nc_latency = _Latency(report.latency_ns)


class BenchmarkRun:
    """`nki.benchmark(warmup=, iters=)(kernel)`: calling it runs the kernel with the timing
    model and returns the timing report (`.outputs` and `.benchmark_result` are kept);
    warmup and iteration counts do not change a deterministic model."""

    def __init__(self, kernel: Any, options: dict) -> None:
        self.kernel, self.options = kernel, options
        self.outputs: Any = None
        self.benchmark_result: _BenchmarkResult | None = None
        functools.update_wrapper(self, getattr(kernel, "function", kernel))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.outputs, report = _report(self.kernel, args, kwargs)
        self.benchmark_result = _BenchmarkResult(report)
        return report


baremetal = _decorator(BaremetalRun)
benchmark = _decorator(BenchmarkRun)


# ---- nki.compiler and nki.typing ---------------------------------------------------------------
def _passthrough(function: Any = None, *args: Any, **options: Any) -> Any:
    """A compiler directive used as a decorator, bare or called: the function, unchanged."""
    if callable(function) and not args and not options:
        return function
    return lambda f: f


@contextlib.contextmanager
def _no_reorder(*args: Any, **options: Any) -> Iterator[None]:
    """`with nki.compiler.no_reorder():` keeps program order, which tracing always does."""
    yield


class _TensorType:
    """`nt.tensor[[128, 512], nl.float32]`: a parameter annotation, ignored when tracing."""

    def __class_getitem__(cls, item: Any) -> type:
        return cls


def _unsupported(prefix: str) -> Callable[[str], Any]:
    def missing(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise UnsupportedConstructError(f"{prefix}.{name} is not supported by ncemu")

    return missing


def _module(name: str, attributes: dict[str, Any], package: bool = False) -> types.ModuleType:
    module = types.ModuleType(name, f"ncemu's stand-in for {name} (kernels.nki.compat)")
    module.__dict__.update(attributes)
    module.__dict__["__getattr__"] = _unsupported(name)
    if package:
        module.__path__ = []  # submodules are looked up (and refused) by _Finder
    return module


def _modules() -> dict[str, types.ModuleType]:
    """Fresh stand-in modules for one run (a kernel file may set attributes on them)."""
    compiler = {"skip_middle_end_transformations": _passthrough,
                "enable_stack_allocator": _passthrough, "force_auto_alloc": _passthrough,
                "no_reorder": _no_reorder}
    typing = {"tensor": _TensorType, "mutable_tensor": _TensorType, "scalar": _TensorType}
    runners = {"jit": jit, "simulate": simulate, "simulate_kernel": simulate_kernel,
               "baremetal": baremetal, "benchmark": benchmark}
    modules = {}
    for root, isa in (("nki", current_isa), ("neuronxcc.nki", legacy)):
        sub = {"language": language, "isa": isa,
               "compiler": _module(f"{root}.compiler", compiler),
               "typing": _module(f"{root}.typing", typing)}
        modules[root] = _module(root, {**runners, **sub}, package=True)
        modules.update({f"{root}.{name}": value for name, value in sub.items()})
    modules["neuronxcc"] = _module("neuronxcc", {"nki": modules["neuronxcc.nki"]}, package=True)
    return modules


class _Finder(importlib.abc.MetaPathFinder):
    """Refuses, with a message, names under `nki.` / `neuronxcc.` that ncemu does not map."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in _ROOTS:
            raise ModuleNotFoundError(
                f"module {name} is not provided by ncemu (it maps nki, nki.language, nki.isa, "
                f"nki.compiler, nki.typing and their neuronxcc.nki counterparts)", name=name)
        return None


@contextlib.contextmanager
def nki_imports(machine: str = "inf2") -> Iterator[None]:
    """Map the NKI import names onto this kernel language inside the block, then restore
    sys.modules and sys.meta_path exactly."""
    modules = _modules()
    saved = {name: sys.modules.get(name, _ABSENT) for name in modules}
    finder = _Finder()
    sys.meta_path.insert(0, finder)
    sys.modules.update(modules)
    token = _MACHINE.set(machine)
    try:
        yield
    finally:
        _MACHINE.reset(token)
        sys.meta_path.remove(finder)
        for name, previous in saved.items():
            if previous is _ABSENT:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def load_kernel_file(path: str) -> types.ModuleType:
    """Execute a kernel file as a module (not as __main__; call inside `nki_imports`).  The
    module is not left in sys.modules."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such kernel file {path}")
    name = f"_ncemu_nki_file_{next(_file_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and the like look their module up while it runs
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def kernel_of(module: types.ModuleType, name: str, path: str) -> Kernel:
    """The kernel `name` of a loaded file: a `@nki.jit` kernel, or a plain function."""
    value = getattr(module, name, None)
    if isinstance(value, (BaremetalRun, BenchmarkRun)):
        value = value.kernel
    if isinstance(value, Kernel):
        return value
    if isinstance(value, types.FunctionType):
        return FileKernel(value, {})
    kernels = sorted(n for n, v in vars(module).items()
                     if isinstance(v, Kernel) and not n.startswith("_"))
    raise TracingError(f"{path} has no kernel {name!r}; its @nki.jit kernels: "
                       f"{', '.join(kernels) or '(none)'}")


def file_location(error: BaseException, path: str) -> str | None:
    """`file.py:42 in kernel` of the innermost frame of `error`'s traceback inside `path`."""
    target = os.path.abspath(path)
    found = None
    for frame in traceback.extract_tb(error.__traceback__):
        if os.path.abspath(frame.filename) == target:
            found = f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}"
    return found
