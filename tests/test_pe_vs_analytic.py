"""The analytic Tensor-engine model against the cycle-by-cycle PE array (the ground truth).

For an isolated matmul, the timing model's result latency (after LoadStationary) must equal the
PE array's fill + stream + drain, and the functional semantics must give the PE array's values
within fp32 accumulation-order tolerance.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.machine import NEURONCORE_V2
from emulator.systolic import SystolicArray, simulate
from emulator.timing import schedule
from isa import MatMul, ProgramBuilder, psum, sbuf
from isa.semantics import matmul as matmul_semantics


def machine(rows: int, cols: int):
    """A what-if core whose PE array (and so its matmul limits) is rows x cols."""
    target = dataclasses.replace(NEURONCORE_V2.target, matmul_max_k=rows, matmul_max_m=cols)
    return dataclasses.replace(NEURONCORE_V2, pe_rows=rows, pe_cols=cols, target=target)


def analytic_result_cycles(spec, k: int, m: int, n: int) -> float:
    """TensorE cycles from the start of an isolated matmul's stream to its result in PSUM."""
    b = ProgramBuilder("isolated")
    b.emit("tensor", MatMul(psum(m, n), sbuf(k, m, "bf16"), sbuf(k, n, "bf16", offset=4096)))
    timed = schedule(b.build(), spec)
    return (timed.end_ns[0] - timed.start_ns[0]) * spec.tensor_ghz


def pe_result_cycles(rows: int, cols: int, k: int, m: int, n: int):
    rng = np.random.default_rng(k * 10007 + m * 101 + n)
    stationary = rng.standard_normal((k, m)).astype(np.float32)
    moving = rng.standard_normal((k, n)).astype(np.float32)
    result = simulate(SystolicArray(rows, cols, "ws"), stationary, moving)
    return result, stationary, moving


def check(rows: int, cols: int, k: int, m: int, n: int) -> None:
    spec = machine(rows, cols)
    result, stationary, moving = pe_result_cycles(rows, cols, k, m, n)
    assert np.isclose(analytic_result_cycles(spec, k, m, n), result.total_cycles
                      - result.load_cycles, rtol=0, atol=1e-6)
    fake = MatMul(psum(m, n), sbuf(k, m, "fp32"), sbuf(k, n, "fp32", offset=8192))
    values = matmul_semantics(fake, {"stationary": stationary, "moving": moving})["dst"]
    # Same fp32 products; numpy's matmul may sum in another order than the array's k order.
    np.testing.assert_allclose(values, result.output, rtol=1e-5, atol=1e-5 * k)


@settings(max_examples=40, deadline=None)
@given(st.integers(4, 16), st.integers(4, 16), st.data())
def test_small_arrays_agree(rows, cols, data):
    k = data.draw(st.integers(1, rows))
    m = data.draw(st.integers(1, cols))
    n = data.draw(st.integers(1, 40))
    check(rows, cols, k, m, n)


def test_full_128x128_array_agrees():
    # fill 127 + stream 512 + drain 127 = 766 cycles after the stationary tile is loaded.
    check(128, 128, 128, 128, 512)
    assert np.isclose(analytic_result_cycles(NEURONCORE_V2, 128, 128, 512), 766, atol=1e-9)


def test_partial_tile_on_128x128_array_agrees():
    check(128, 128, 64, 100, 200)
