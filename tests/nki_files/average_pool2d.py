"""2-D average pooling (current NKI API): a 5-D access pattern groups every pool window of an
SBUF tile, a reduction sums the windows, a scale divides by the window size."""

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def tensor_avgpool_kernel(in_tensor, pool_size):
    sz_cin, sz_hin, sz_win = in_tensor.shape
    sz_hout, sz_wout = sz_hin // pool_size, sz_win // pool_size
    assert sz_cin <= nl.tile_size.pmax, "channels go on partitions"
    out_tensor = nl.ndarray((sz_cin, sz_hout, sz_wout), dtype=in_tensor.dtype,
                            buffer=nl.shared_hbm)

    # Load the whole input, channels on partitions.
    in_tile = nl.ndarray(in_tensor.shape, dtype=in_tensor.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=in_tile, src=in_tensor)

    # View it as [C, H/p, W/p, p, p]: window rows and columns outermost, window contents inner.
    window_view = in_tile.ap([
        [sz_hin * sz_win, sz_cin],
        [pool_size * sz_win, sz_hout],
        [pool_size, sz_wout],
        [sz_win, pool_size],
        [1, pool_size],
    ])

    # Sum every window, then divide by its size.
    sum_tile = nl.ndarray((sz_cin, sz_hout, sz_wout), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_reduce(dst=sum_tile, op=nl.add, data=window_view, axis=[3, 4])
    out_tile = nl.ndarray((sz_cin, sz_hout, sz_wout), dtype=in_tensor.dtype, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=out_tile, data=sum_tile, op0=nl.multiply,
                       operand0=1.0 / (pool_size * pool_size))
    nisa.dma_copy(dst=out_tensor, src=out_tile)
    return out_tensor
