"""SPMD tensor addition (current NKI API): each program instance adds one [128, 512] tile.

Launch as nki_tensor_add_kernel_[rows // 128, cols // 512](a, b).
"""

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def nki_tensor_add_kernel_(a_input, b_input):
    """c = a + b for the tile of this program instance."""
    c_output = nl.ndarray(a_input.shape, dtype=a_input.dtype, buffer=nl.shared_hbm)

    # Which [128, 512] tile this instance adds, from its position in the launch grid.
    offset_i_x = nl.program_id(0) * 128
    offset_i_y = nl.program_id(1) * 512

    # Load the two input tiles from HBM into SBUF.
    a_tile = nl.ndarray((128, 512), dtype=a_input.dtype, buffer=nl.sbuf)
    b_tile = nl.ndarray((128, 512), dtype=b_input.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=a_tile, src=a_input[offset_i_x:offset_i_x + 128,
                                          offset_i_y:offset_i_y + 512])
    nisa.dma_copy(dst=b_tile, src=b_input[offset_i_x:offset_i_x + 128,
                                          offset_i_y:offset_i_y + 512])

    # Add on the Vector engine and store the sum.
    c_tile = nl.ndarray((128, 512), dtype=a_input.dtype, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=c_tile, data1=a_tile, data2=b_tile, op=nl.add)
    nisa.dma_copy(dst=c_output[offset_i_x:offset_i_x + 128, offset_i_y:offset_i_y + 512],
                  src=c_tile)
    return c_output
