"""The LIBRARY table: the names the command line expects, self-describing frozen records whose
defaults agree with the kernels' own, deterministic inputs, and default shapes every kernel
accepts."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from emulator.kernel_runner import trace
from kernels.library import DTYPES, LIBRARY

REQUIRED = ("matmul", "matmul_basic", "matmul_naive", "matmul_hoisted", "matmul_blocked",
            "add", "subtract", "multiply", "divide", "maximum", "exp", "tanh", "gelu", "silu",
            "relu", "sigmoid", "softmax", "layernorm", "layernorm_naive", "rmsnorm", "transpose",
            "transpose_dma", "conv2d", "avgpool", "maxpool", "attention", "mlp")


def test_the_library_has_every_required_kernel():
    assert set(REQUIRED) <= set(LIBRARY)
    for name, entry in LIBRARY.items():
        assert entry.name == name


def test_the_table_and_its_records_are_immutable():
    with pytest.raises(TypeError):
        LIBRARY["mine"] = LIBRARY["add"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        LIBRARY["add"].name = "plus"  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_describe_names_every_parameter_and_tolerance(name):
    entry = LIBRARY[name]
    text = entry.describe()
    assert text.startswith(f"{name}: {entry.summary}")
    assert entry.signature in text
    for param in (*entry.shapes, *entry.options, *entry.layout):
        assert f"{param.name}={param.default!r}" in text
        for value in param.allowed:
            assert repr(value) in text
    for dtype in DTYPES:
        tolerance = entry.tolerance_for(dtype)
        assert f"{dtype} rtol={tolerance.rtol:g} atol={tolerance.atol:g}" in text


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_registry_defaults_are_the_kernels_defaults(name):
    """`ncemu run NAME` and a direct kernel call without arguments run the same layout."""
    entry = LIBRARY[name]
    signature = inspect.signature(entry.kernel.function).parameters
    for param in (*entry.options, *entry.layout):
        if param.to_kernel:
            assert signature[param.name].default == param.default, param.name


def test_kernel_arguments_combine_pinned_values_options_and_layout():
    entry = LIBRARY["subtract"]
    kwargs = entry.kernel_kwargs({"broadcast": "row"}, {"F_TILE": 512})
    # `broadcast` shapes the inputs only; the kernel sees the shapes.
    assert kwargs == {"op": "subtract", "F_TILE": 512}
    x, y = entry.inputs({"rows": 3, "cols": 5}, {"broadcast": "row"})
    assert x.shape == (3, 5) and y.shape == (1, 5)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_inputs_are_deterministic_and_in_the_dtype(dtype):
    entry = LIBRARY["attention"]
    first = entry.inputs({"seq": 16}, dtype=dtype, seed=3)
    again = entry.inputs({"seq": 16}, dtype=dtype, seed=3)
    other = entry.inputs({"seq": 16}, dtype=dtype, seed=4)
    assert all(a.dtype == DTYPES[dtype] for a in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_default_shapes_trace_with_the_default_layout(name):
    entry = LIBRARY[name]
    arrays = entry.inputs(dtype="bf16")
    assert trace(entry.kernel, *arrays, **entry.kernel_kwargs()) is not None
