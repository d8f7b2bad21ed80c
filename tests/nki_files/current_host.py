"""A current-API kernel run from host code with nki.simulate."""

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def add_one(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    x_tile = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=x_tile, src=x)
    nisa.tensor_scalar(dst=x_tile, data=x_tile, op0=nl.add, operand0=1.0)
    nisa.dma_copy(dst=out, src=x_tile)
    return out


def run(x):
    return nki.simulate(add_one)(x)
