"""Selective scan of a Mamba layer (current NKI API), after the NKI Mamba tutorial:

    h[c, t] = exp(delta[c, t] * A[c, s]) * h[c, t-1] + delta[c, t] * u[c, t] * B[s, t]
    y[c, t] = sum over states s of h[c, t] * C[s, t]

channels on partitions, time along the free axis; the recurrence is one tensor_tensor_scan.
"""

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def mamba_selective_scan(delta, u, A, B, C):
    channels, seq_len = delta.shape
    _, state_size = A.shape
    assert channels <= nl.tile_size.pmax, "channels go on partitions"
    output = nl.ndarray((channels, seq_len), dtype=delta.dtype, buffer=nl.shared_hbm)

    # Inputs of every state, loaded once.
    delta_i = nl.ndarray((channels, seq_len), dtype=delta.dtype, buffer=nl.sbuf)
    u_i = nl.ndarray((channels, seq_len), dtype=u.dtype, buffer=nl.sbuf)
    A_i = nl.ndarray((channels, state_size), dtype=A.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=delta_i, src=delta)
    nisa.dma_copy(dst=u_i, src=u)
    nisa.dma_copy(dst=A_i, src=A)
    delta_u = nl.ndarray((channels, seq_len), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=delta_u, data1=delta_i, data2=u_i, op=nl.multiply)

    scan_sum = nl.ndarray((channels, seq_len), dtype=nl.float32, buffer=nl.sbuf)
    nisa.memset(dst=scan_sum, value=0.0)
    for i_state in nl.affine_range(state_size):
        # exp(delta * A[:, s]): A's column is the per-partition scale of the activation.
        delta_A = nl.ndarray((channels, seq_len), dtype=nl.float32, buffer=nl.sbuf)
        nisa.activation(dst=delta_A, op=nl.exp, data=delta_i,
                        scale=A_i[:, i_state:i_state + 1])

        # Rows s of B and C, broadcast to every channel by a zero partition step.
        B_i = nl.ndarray((channels, seq_len), dtype=B.dtype, buffer=nl.sbuf)
        C_i = nl.ndarray((channels, seq_len), dtype=C.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=B_i, src=B.ap(pattern=[[0, channels], [1, seq_len]],
                                        offset=i_state * seq_len))
        nisa.dma_copy(dst=C_i, src=C.ap(pattern=[[0, channels], [1, seq_len]],
                                        offset=i_state * seq_len))

        # h[t] = delta_A[t] * h[t-1] + delta_u[t] * B[t]
        delta_Bu = nl.ndarray((channels, seq_len), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=delta_Bu, data1=delta_u, data2=B_i, op=nl.multiply)
        scan_res = nl.ndarray((channels, seq_len), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_tensor_scan(dst=scan_res, data0=delta_A, data1=delta_Bu, initial=0,
                                op0=nl.multiply, op1=nl.add)

        # y += h * C[s]
        scan_c = nl.ndarray((channels, seq_len), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=scan_c, data1=scan_res, data2=C_i, op=nl.multiply)
        nisa.tensor_tensor(dst=scan_sum, data1=scan_sum, data2=scan_c, op=nl.add)

    out_tile = nl.ndarray((channels, seq_len), dtype=delta.dtype, buffer=nl.sbuf)
    nisa.tensor_copy(dst=out_tile, src=scan_sum)
    nisa.dma_copy(dst=output, src=out_tile)
    return output
