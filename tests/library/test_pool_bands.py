"""Pools whose image plane does not fit one SBUF partition run in bands of output rows."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.kernel_runner import simulate, trace
from kernels.library.conv import avgpool, avgpool_golden, maxpool, maxpool_golden


@pytest.mark.parametrize("kernel, golden, padding", [(maxpool, maxpool_golden, 1),
                                                     (avgpool, avgpool_golden, 0)])
def test_a_plane_larger_than_inf1_sbuf_pools_in_bands(kernel, golden, padding):
    # 150 x 150 fp32 = 90 KB per plane, more than Inf1's 80 KiB partition: bands are needed.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 150, 150)).astype(np.float32)
    out = simulate(kernel, target="inf1")(x, kernel_size=3, stride=2, padding=padding)
    # Padding is -inf for max (zeros would count for average): pad, then pool unpadded.
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                    constant_values=-np.inf)
    np.testing.assert_allclose(out, golden(padded, 3, 2), rtol=1e-6, atol=1e-6)
    # On Inf2 (192 KiB) the whole plane fits: one band, so fewer instructions than on Inf1.
    inf1 = trace(kernel, x, target="inf1", kernel_size=3, stride=2, padding=padding)
    inf2 = trace(kernel, x, target="inf2", kernel_size=3, stride=2, padding=padding)
    assert inf1.instruction_count > inf2.instruction_count
