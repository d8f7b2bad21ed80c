"""2-D transpose out[C, R] = x[R, C].T (current NKI API), in 128 x 128 blocks addressed with
nl.ds, each block through the PE array into PSUM."""

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def transpose2d_kernel(in_tensor):
    rows, cols = in_tensor.shape
    tile = nl.tile_size.pmax
    assert rows % tile == 0 and cols % tile == 0, "rows and cols must be multiples of 128"
    out_tensor = nl.ndarray((cols, rows), dtype=in_tensor.dtype, buffer=nl.shared_hbm)

    for i in nl.affine_range(rows // tile):
        # One band of 128 rows of the input, all columns.
        band = nl.ndarray((tile, cols), dtype=in_tensor.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=band, src=in_tensor[nl.ds(i * tile, tile), :])
        for j in nl.affine_range(cols // tile):
            # Transpose block (i, j) on the Tensor engine, evict it, store it at (j, i).
            block_psum = nl.ndarray((tile, tile), dtype=nl.float32, buffer=nl.psum)
            nisa.nc_transpose(dst=block_psum, data=band[:, nl.ds(j * tile, tile)])
            block = nl.ndarray((tile, tile), dtype=in_tensor.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=block, src=block_psum)
            nisa.dma_copy(dst=out_tensor[nl.ds(j * tile, tile), nl.ds(i * tile, tile)],
                          src=block)
    return out_tensor
