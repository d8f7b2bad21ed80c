"""Random inputs of the library kernels for a shape dict: float64 draws rounded once to the
kernel's dtype (round to nearest even, ml_dtypes for bf16), so a golden computed from the
returned arrays sees exactly the values the kernel sees.

Scales keep results well inside every dtype's range: matmul operands are standard normal,
weights are scaled by 1/sqrt(fan-in), divisors and log/sqrt arguments stay away from 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kernels.library.elementwise import POSITIVE_DOMAIN


def _normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any,
            scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(dtype)


def matmul_inputs(shapes: Mapping[str, int], options: Mapping[str, Any], dtype: Any,
                  rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """lhsT [K, M], rhs [K, N]."""
    K, M, N = shapes["K"], shapes["M"], shapes["N"]
    return _normal(rng, (K, M), dtype), _normal(rng, (K, N), dtype)


# Shape of the second operand of a binary op for each `broadcast` option.
BROADCASTS = {"none": lambda r, c: (r, c), "row": lambda r, c: (1, c),
              "vector": lambda r, c: (c,), "column": lambda r, c: (r, 1),
              "scalar": lambda r, c: (1, 1)}


def binary_inputs(divisor: bool):
    """x [rows, cols] and y broadcast as options["broadcast"]; y stays in +-[0.5, 2] when it is
    a divisor."""

    def make(shapes: Mapping[str, int], options: Mapping[str, Any], dtype: Any,
             rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        rows, cols = shapes["rows"], shapes["cols"]
        y_shape = BROADCASTS[options["broadcast"]](rows, cols)
        x = _normal(rng, (rows, cols), dtype)
        if divisor:
            y = (rng.uniform(0.5, 2.0, y_shape) * rng.choice([-1.0, 1.0], y_shape)).astype(dtype)
        else:
            y = _normal(rng, y_shape, dtype)
        return x, y

    return make


def unary_inputs(op: str):
    """x [rows, cols]: standard normal times 2, or uniform in [0.1, 4] for sqrt/rsqrt/log."""

    def make(shapes: Mapping[str, int], options: Mapping[str, Any], dtype: Any,
             rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        shape = (shapes["rows"], shapes["cols"])
        if op in POSITIVE_DOMAIN:
            return (rng.uniform(0.1, 4.0, shape).astype(dtype),)
        return (_normal(rng, shape, dtype, 2.0),)

    return make


def rows_inputs(shapes: Mapping[str, int], options: Mapping[str, Any], dtype: Any,
                rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """x [rows, cols], spread (sd 3) so softmax rows are far from uniform."""
    return (_normal(rng, (shapes["rows"], shapes["cols"]), dtype, 3.0),)


def layernorm_inputs(shapes: Mapping[str, int], options: Mapping[str, Any], dtype: Any,
                     rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """x [rows, cols] with a per-row offset (so centring matters), gamma [cols], beta [cols]."""
    rows, cols = shapes["rows"], shapes["cols"]
    x = (rng.standard_normal((rows, cols)) + rng.uniform(-4, 4, (rows, 1))).astype(dtype)
    return x, _normal(rng, (cols,), dtype), _normal(rng, (cols,), dtype)


def rmsnorm_inputs(shapes: Mapping[str, int], options: Mapping[str, Any], dtype: Any,
                   rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """x [rows, cols], gamma [cols]."""
    rows, cols = shapes["rows"], shapes["cols"]
    return _normal(rng, (rows, cols), dtype), _normal(rng, (cols,), dtype)


def conv2d_inputs(shapes: Mapping[str, int], options: Mapping[str, Any], dtype: Any,
                  rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """x [batch, c_in, height, width], w [c_out, c_in, kernel_h, kernel_w] / sqrt(fan-in)."""
    x_shape = (shapes["batch"], shapes["c_in"], shapes["height"], shapes["width"])
    w_shape = (shapes["c_out"], shapes["c_in"], shapes["kernel_h"], shapes["kernel_w"])
    fan_in = shapes["c_in"] * shapes["kernel_h"] * shapes["kernel_w"]
    return _normal(rng, x_shape, dtype), _normal(rng, w_shape, dtype, fan_in ** -0.5)


def pool_inputs(shapes: Mapping[str, int], options: Mapping[str, Any], dtype: Any,
                rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """x [batch, channels, height, width]."""
    shape = (shapes["batch"], shapes["channels"], shapes["height"], shapes["width"])
    return (_normal(rng, shape, dtype),)


def attention_inputs(shapes: Mapping[str, int], options: Mapping[str, Any], dtype: Any,
                     rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """q, k, v [batch, heads, seq, head_dim], standard normal."""
    shape = (shapes["batch"], shapes["heads"], shapes["seq"], shapes["head_dim"])
    return tuple(_normal(rng, shape, dtype) for _ in range(3))


def mlp_inputs(shapes: Mapping[str, int], options: Mapping[str, Any], dtype: Any,
               rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """x [tokens, d_model], w1 [d_model, d_ff] / sqrt(d_model), w2 [d_ff, d_model] / sqrt(d_ff)."""
    tokens, d_model, d_ff = shapes["tokens"], shapes["d_model"], shapes["d_ff"]
    return (_normal(rng, (tokens, d_model), dtype),
            _normal(rng, (d_model, d_ff), dtype, d_model ** -0.5),
            _normal(rng, (d_ff, d_model), dtype, d_ff ** -0.5))
