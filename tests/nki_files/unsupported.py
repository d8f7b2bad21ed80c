"""Kernels using constructs ncemu does not support; each must fail naming the construct and
the line here that uses it."""

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def indirect_rows(data, indices):
    out = nl.ndarray((128, data.shape[1]), dtype=data.dtype, buffer=nl.shared_hbm)
    index_tile = nl.ndarray((128, 1), dtype=indices.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=index_tile, src=indices)
    rows = nl.ndarray((128, data.shape[1]), dtype=data.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=rows, src=data.ap([[data.shape[1], 128], [1, data.shape[1]]],
                                        vector_offset=index_tile, indirect_dim=0))
    nisa.dma_copy(dst=out, src=rows)
    return out


@nki.jit
def unknown_function(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nl.store(out, nl.softplus(nl.load(x)))
    return out
