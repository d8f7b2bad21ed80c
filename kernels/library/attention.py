"""Scaled dot-product attention, flash style (tiles of K/V with a running max and running sum,
the accumulator rescaled per tile), optionally causal (`affine_select`), for q/k/v [B, H, S, D]
with a loop over batch and heads.  Follows the algorithm of Dao et al., FlashAttention (2022).
"""

from __future__ import annotations

import math

import numpy as np

from kernels.library.common import cdiv, require, require_sbuf, span, spans
from kernels.nki import NkiTensor, jit
from kernels.nki import isa as nisa
from kernels.nki import language as nl

P_MAX = nl.tile_size.pmax
KV_TILE_MAX = nl.tile_size.gemm_moving_fmax
MASKED = -1.0e30  # score of a masked (future) key: exp(MASKED - max) is exactly 0


def attention_golden(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool = False,
                     softmax_scale: float | None = None, mask: np.ndarray | None = None,
                     **_layout: object) -> np.ndarray:
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    scores = np.einsum("bhqd,bhkd->bhqk", q, k) * scale
    if mask is not None:
        scores = scores + mask.astype(np.float64)
    if causal:
        future = np.triu(np.ones(scores.shape[-2:], dtype=bool), k=1)
        scores = np.where(future, -np.inf, scores)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", weights, v)


def _transpose_rows(dst: NkiTensor, src_rows: list[NkiTensor], chunk_rows: int) -> None:
    """dst[D, rows] = src_rows.T for a [rows <= 512, D] tile list, through one PSUM tile."""
    D, columns = dst.shape
    t_psum = nl.ndarray((D, columns), dtype=nl.float32, buffer=nl.psum)
    for j, chunk in enumerate(src_rows):
        rows = chunk.shape[0]
        nisa.nc_transpose(dst=t_psum[:, j * chunk_rows:j * chunk_rows + rows], data=chunk)
    nisa.tensor_copy(dst=dst, src=t_psum)


@jit
def attention(q: NkiTensor, k: NkiTensor, v: NkiTensor, causal: bool = False,
              softmax_scale: float | None = None, KV_TILE: int = KV_TILE_MAX,
              mask: NkiTensor | None = None, Q_TILE: int = P_MAX) -> NkiTensor:
    """Flash attention over q [B, H, S, D], k/v [B, H, S_kv, D] -> out [B, H, S, D].

    Per head, K^T [D, S_kv] is built once by Tensor-engine transposes and V is loaded once as
    128-row chunks.  Per tile of Q_TILE queries (at most 128; Q^T by one transpose), keys are
    visited KV_TILE at a time (at most 512, the moving free size), keeping per query row the
    running maximum m (negated), the running sum l and an fp32 accumulator.  The statistics
    steps run once per key tile, so a larger KV_TILE issues fewer instructions.  An optional
    additive `mask` [B or 1, H or 1, S or 1, S_kv] (an HBM tensor of its own) is added to the
    scaled scores; a mask row shared by all queries is loaded once per (batch, head, key tile)
    it differs in, replicated to the query partitions.
    """
    require(len(q.shape) == 4 and tuple(k.shape) == tuple(v.shape) and len(k.shape) == 4,
            f"attention: q must be [B, H, S, D] and k, v [B, H, S_kv, D], got {q.shape}, "
            f"{k.shape}, {v.shape}")
    B, H, S, D = q.shape
    S_kv = k.shape[2]
    require(tuple(k.shape) == (B, H, S_kv, D),
            f"attention: k {k.shape} must match q {q.shape} in B, H and D")
    require(D <= P_MAX, f"attention: head size D={D} exceeds nl.tile_size.pmax={P_MAX} (D is "
                        f"the contraction axis of Q K^T)")
    require(not causal or S_kv == S,
            f"attention: causal masking needs as many keys as queries, got S={S}, S_kv={S_kv}")
    require(KV_TILE % P_MAX == 0 and P_MAX <= KV_TILE <= KV_TILE_MAX,
            f"attention: KV_TILE={KV_TILE} must be a multiple of {P_MAX} up to "
            f"nl.tile_size.gemm_moving_fmax={KV_TILE_MAX} (the moving tile of Q K^T)")
    require(1 <= Q_TILE <= P_MAX,
            f"attention: Q_TILE={Q_TILE} must be 1..{P_MAX} (queries on the partitions)")
    if mask is not None:
        require(len(mask.shape) == 4 and mask.shape[3] == S_kv
                and all(m in (1, full) for m, full in zip(mask.shape[:3], (B, H, S))),
                f"attention: mask {mask.shape} must be [B or 1, H or 1, S or 1, S_kv={S_kv}] "
                f"for q {q.shape}")
    mask_rows: dict[tuple[int, int, int], NkiTensor] = {}  # shared rows, kept across heads
    itemsize = np.dtype(k.dtype).itemsize
    kv_chunks = cdiv(S_kv, P_MAX)
    require_sbuf("attention", f"K^T and V of one head (S_kv={S_kv}, D={D}, double buffered)",
                 2 * (S_kv + kv_chunks * D) * itemsize + 4 * KV_TILE * 4)
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else float(softmax_scale)
    out = nl.ndarray((B, H, S, D), dtype=q.dtype, buffer=nl.shared_hbm)
    for b in nl.affine_range(B):
        for h in nl.affine_range(H):
            # K^T [D, S_kv] for the head: 128-row chunks of k transposed, 4 per PSUM tile.
            kT = nl.ndarray((D, S_kv), dtype=k.dtype, buffer=nl.sbuf)
            for _, g0, group in spans(S_kv, KV_TILE_MAX):
                chunks = []
                for _, c0, rows in spans(group, P_MAX):
                    k_chunk = nl.ndarray((rows, D), dtype=k.dtype, buffer=nl.sbuf)
                    nisa.dma_copy(dst=k_chunk, src=k[b, h, g0 + c0:g0 + c0 + rows, :])
                    chunks.append(k_chunk)
                _transpose_rows(kT[:, g0:g0 + group], chunks, P_MAX)
            # V for the head: chunk c holds rows c*128.. on the partitions.
            v_all = nl.ndarray((P_MAX, kv_chunks, D), dtype=v.dtype, buffer=nl.sbuf)
            for c, c0, rows in spans(S_kv, P_MAX):
                nisa.dma_copy(dst=v_all[0:rows, c, :], src=v[b, h, c0:c0 + rows, :])
            for qt in nl.affine_range(cdiv(S, Q_TILE)):
                q0, qs = span(qt, Q_TILE, S)
                # Q^T [D, qs] for this query tile.
                q_tile = nl.ndarray((qs, D), dtype=q.dtype, buffer=nl.sbuf)
                nisa.dma_copy(dst=q_tile, src=q[b, h, q0:q0 + qs, :])
                qT = nl.ndarray((D, qs), dtype=q.dtype, buffer=nl.sbuf)
                _transpose_rows(qT, [q_tile], P_MAX)
                # Keys after the last query of the tile are all masked: stop before them.
                kv_end = min(S_kv, q0 + qs) if causal else S_kv
                # Running statistics of the query rows; the first key tile sets them.
                neg_max = row_sum = acc = None
                for kt in nl.sequential_range(cdiv(kv_end, KV_TILE)):
                    k0, kvs = span(kt, KV_TILE, kv_end)
                    # 1. S = Q K^T * scale.
                    s_psum = nl.ndarray((qs, kvs), dtype=nl.float32, buffer=nl.psum)
                    nisa.nc_matmul(dst=s_psum, stationary=qT, moving=kT[:, k0:k0 + kvs])
                    scores = nl.ndarray((qs, kvs), dtype=nl.float32, buffer=nl.sbuf)
                    nisa.activation(dst=scores, op=nl.copy, data=s_psum, scale=scale)
                    if mask is not None:
                        mask_tile = _mask_tile(mask, mask_rows, b, h, q0, qs, k0, kvs)
                        nisa.tensor_tensor(dst=scores, data1=scores, data2=mask_tile, op=nl.add)
                    # 2. Causal mask where this tile crosses the diagonal: keep key k0 + j for
                    #    query q0 + p when (q0 - k0) + p - j >= 0.
                    if causal and k0 + kvs - 1 > q0:
                        nisa.affine_select(dst=scores, pattern=[[-1, kvs]], offset=q0 - k0,
                                           channel_multiplier=1, on_true_tile=scores,
                                           on_false_value=MASKED, cmp_op=nl.greater_equal)
                    # 3. Running maximum (negated) and the correction of the old statistics.
                    tile_neg_max = nl.ndarray((qs, 1), dtype=nl.float32, buffer=nl.sbuf)
                    nisa.tensor_reduce(dst=tile_neg_max, op=nl.max, data=scores, axis=1,
                                       negate=True)
                    if kt == 0:
                        new_neg_max = tile_neg_max
                    else:
                        new_neg_max = nl.ndarray((qs, 1), dtype=nl.float32, buffer=nl.sbuf)
                        nisa.tensor_tensor(dst=new_neg_max, data1=neg_max, data2=tile_neg_max,
                                           op=nl.minimum)
                        alpha = nl.ndarray((qs, 1), dtype=nl.float32, buffer=nl.sbuf)
                        nisa.activation(dst=alpha, op=nl.exp, data=neg_max, scale=-1.0,
                                        bias=new_neg_max)
                    # 4. P = exp(S - m_new) with its row sum; l = l * alpha + rowsum.
                    probs = nl.ndarray((qs, kvs), dtype=v.dtype, buffer=nl.sbuf)
                    tile_sum = nl.ndarray((qs, 1), dtype=nl.float32, buffer=nl.sbuf)
                    nisa.activation(dst=probs, op=nl.exp, data=scores, bias=new_neg_max,
                                    reduce_op=nl.add, reduce_res=tile_sum,
                                    reduce_cmd=nisa.reduce_cmd.reset_reduce)
                    if kt == 0:
                        row_sum = tile_sum
                    else:
                        nisa.tensor_scalar(dst=row_sum, data=row_sum, op0=nl.multiply,
                                           operand0=alpha, op1=nl.add, operand1=tile_sum)
                    # 5. P^T chunk by chunk (key chunk j on the partitions), then P V over
                    #    the chunks in PSUM.
                    pT_psum = nl.ndarray((P_MAX, cdiv(kvs, P_MAX) * qs), dtype=nl.float32,
                                         buffer=nl.psum)
                    for j, j0, js in spans(kvs, P_MAX):
                        nisa.nc_transpose(dst=pT_psum[0:js, j * qs:(j + 1) * qs],
                                          data=probs[:, j0:j0 + js])
                    pT = nl.ndarray((P_MAX, cdiv(kvs, P_MAX) * qs), dtype=v.dtype,
                                    buffer=nl.sbuf)
                    full = kvs // P_MAX  # chunks of 128 keys: evicted together
                    if full:
                        nisa.tensor_copy(dst=pT[:, 0:full * qs], src=pT_psum[:, 0:full * qs])
                    if kvs % P_MAX:
                        ragged = kvs % P_MAX
                        nisa.tensor_copy(dst=pT[0:ragged, full * qs:(full + 1) * qs],
                                         src=pT_psum[0:ragged, full * qs:(full + 1) * qs])
                    pv_psum = nl.ndarray((qs, D), dtype=nl.float32, buffer=nl.psum)
                    for j, j0, js in spans(kvs, P_MAX):
                        nisa.nc_matmul(dst=pv_psum, stationary=pT[0:js, j * qs:(j + 1) * qs],
                                       moving=v_all[0:js, (k0 + j0) // P_MAX, :])
                    if kt == 0:
                        acc = nl.ndarray((qs, D), dtype=nl.float32, buffer=nl.sbuf)
                        nisa.tensor_copy(dst=acc, src=pv_psum)
                    else:
                        nisa.tensor_scalar(dst=acc, data=acc, op0=nl.multiply, operand0=alpha)
                        nisa.tensor_tensor(dst=acc, data1=acc, data2=pv_psum, op=nl.add)
                    neg_max = new_neg_max
                # 6. out = acc / l, in the output dtype.
                inverse = nl.ndarray((qs, 1), dtype=nl.float32, buffer=nl.sbuf)
                nisa.reciprocal(dst=inverse, data=row_sum)
                o_tile = nl.ndarray((qs, D), dtype=out.dtype, buffer=nl.sbuf)
                nisa.tensor_scalar(dst=o_tile, data=acc, op0=nl.multiply, operand0=inverse)
                nisa.dma_copy(dst=out[b, h, q0:q0 + qs, :], src=o_tile)
    return out


def _mask_tile(mask: NkiTensor, rows: dict[tuple[int, int, int], NkiTensor], b: int, h: int,
               q0: int, qs: int, k0: int, kvs: int) -> NkiTensor:
    """mask[b, h, q0:q0+qs, k0:k0+kvs] as an fp32 [qs, kvs] tile, broadcast dimensions read at
    index 0; a row shared by every query is replicated to the partitions (partition step 0)
    once and kept."""
    MB, MH, MS, S_kv = mask.shape
    mb, mh = (b if MB > 1 else 0), (h if MH > 1 else 0)
    base = (mb * MH + mh) * MS * S_kv + k0
    if MS == 1:
        key = (mb, mh, k0)
        if key not in rows:
            row_tile = nl.ndarray((P_MAX, kvs), dtype=nl.float32, buffer=nl.sbuf)
            nisa.dma_copy(dst=row_tile, src=mask.ap([[0, P_MAX], [1, kvs]], offset=base))
            rows[key] = row_tile
        return rows[key][0:qs, :]
    mask_tile = nl.ndarray((qs, kvs), dtype=nl.float32, buffer=nl.sbuf)
    nisa.dma_copy(dst=mask_tile, src=mask.ap([[S_kv, qs], [1, kvs]], offset=base + q0 * S_kv))
    return mask_tile
