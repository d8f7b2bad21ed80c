"""Legacy kernels using constructs ncemu does not support."""

import neuronxcc.nki as nki
import neuronxcc.nki.language as nl


@nki.jit
def gather_rows(data, indices):
    i_p = nl.arange(128)[:, None]
    i_f = nl.arange(data.shape[1])[None, :]
    out = nl.ndarray((128, data.shape[1]), dtype=data.dtype, buffer=nl.shared_hbm)
    index_tile = nl.load(indices)
    rows = nl.load(data[index_tile, i_f])
    nl.store(out[i_p, i_f], value=rows)
    return out


@nki.jit
def triangular_load(x):
    i_p = nl.arange(x.shape[0])[:, None]
    i_f = nl.arange(x.shape[1])[None, :]
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    x_tile = nl.load(x[i_p, i_f], mask=(i_p >= i_f))
    nl.store(out[i_p, i_f], value=x_tile)
    return out


@nki.jit
def unmasked_overrun(x):
    i_p = nl.arange(128)[:, None]
    i_f = nl.arange(x.shape[1])[None, :]
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    for m in nl.affine_range((x.shape[0] + 127) // 128):
        nl.store(out[i_p + 128 * m, i_f], value=nl.load(x[i_p + 128 * m, i_f]))
    return out
