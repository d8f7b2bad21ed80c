"""2-D convolution as an implicit GEMM (shifted matmuls accumulating in PSUM, no im2col matrix)
and 2-D average / max pooling, all in NCHW layout.  Channels lie on the partitions: input
channels are the contraction axis of the convolution, each image plane one partition of a pool.
"""

from __future__ import annotations

import numpy as np

from kernels.library.common import cdiv, require, require_sbuf, span
from kernels.nki import NkiTensor, jit
from kernels.nki import isa as nisa
from kernels.nki import language as nl
from kernels.nki.ops import Op

P_MAX = nl.tile_size.pmax
M_MAX = nl.tile_size.gemm_stationary_fmax
N_MAX = nl.tile_size.gemm_moving_fmax
POOL_REDUCTIONS = ("window", "separable")


def _out_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


# ---- goldens -------------------------------------------------------------------------------------
def conv2d_golden(x: np.ndarray, w: np.ndarray, stride: int = 1, padding: int = 0,
                  **_layout: object) -> np.ndarray:
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, _, h, width = x.shape
    c_out, _, kh, kw = w.shape
    h_out, w_out = _out_size(h, kh, stride, padding), _out_size(width, kw, stride, padding)
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.zeros((n, c_out, h_out, w_out))
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i:i + (h_out - 1) * stride + 1:stride,
                            j:j + (w_out - 1) * stride + 1:stride]
            out += np.einsum("nchw,oc->nohw", window, w[:, :, i, j])
    return out


def _windows(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    n, c, h, w = x.shape
    h_out, w_out = _out_size(h, kernel, stride), _out_size(w, kernel, stride)
    return np.stack([x[:, :, i:i + (h_out - 1) * stride + 1:stride,
                       j:j + (w_out - 1) * stride + 1:stride]
                     for i in range(kernel) for j in range(kernel)])


def avgpool_golden(x: np.ndarray, kernel_size: int = 2, stride: int = 2,
                   **_layout: object) -> np.ndarray:
    return _windows(x.astype(np.float64), kernel_size, stride).mean(axis=0)


def maxpool_golden(x: np.ndarray, kernel_size: int = 2, stride: int = 2,
                   **_layout: object) -> np.ndarray:
    return _windows(x.astype(np.float64), kernel_size, stride).max(axis=0)


# ---- conv2d --------------------------------------------------------------------------------------
@jit
def conv2d(x: NkiTensor, w: NkiTensor, stride: int = 1, padding: int = 0,
           TILE_N: int = N_MAX) -> NkiTensor:
    """out [N, C_out, H_out, W_out] = conv(x [N, C_in, H, W], w [C_out, C_in, KH, KW]), no bias,
    H_out = (H + 2 * padding - KH) // stride + 1 (W likewise).

    Each padded image is loaded once (a zero memset, then the interior by DMA).  For each filter
    tap (kh, kw) the moving operand is a strided view of it, rows oh * stride + kh and columns
    ow * stride + kw, and the KH * KW * ceil(C_in / 128) matmuls of an output tile accumulate in
    PSUM.  The stationary w[:, ci, kh, kw].T come from one strided DMA of w per 128 input
    channels.  TILE_N output pixels (whole output rows) make one matmul's moving free size.
    """
    require(len(x.shape) == 4 and len(w.shape) == 4,
            f"conv2d: x must be [N, C_in, H, W] and w [C_out, C_in, KH, KW], got {x.shape} "
            f"and {w.shape}")
    N, C_in, H, W = x.shape
    C_out, C_in_w, KH, KW = w.shape
    require(C_in == C_in_w, f"conv2d: x has C_in={C_in} channels, w expects {C_in_w}")
    require(stride >= 1 and padding >= 0,
            f"conv2d: stride={stride} must be >= 1 and padding={padding} >= 0")
    H_out, W_out = _out_size(H, KH, stride, padding), _out_size(W, KW, stride, padding)
    require(H_out >= 1 and W_out >= 1,
            f"conv2d: a {KH}x{KW} filter does not fit the padded {H}x{W} image")
    require(1 <= TILE_N <= N_MAX,
            f"conv2d: moving tile TILE_N={TILE_N} must be 1..{N_MAX} "
            f"(nl.tile_size.gemm_moving_fmax)")
    require(W_out <= TILE_N,
            f"conv2d: an output row of W_out={W_out} pixels exceeds the moving tile "
            f"TILE_N={TILE_N}; each matmul covers whole output rows")
    Hp, Wp = H + 2 * padding, W + 2 * padding
    ROWS = min(H_out, TILE_N // W_out)  # output rows per matmul
    TAPS = KH * KW
    itemsize = np.dtype(x.dtype).itemsize
    ci_tiles = cdiv(C_in, P_MAX)
    require_sbuf("conv2d", f"{ci_tiles} weight tiles [128, {TAPS}, {C_out}] and {ci_tiles} "
                 f"padded images [128, {Hp}, {Wp}] (double buffered)",
                 ci_tiles * (TAPS * C_out + 2 * Hp * Wp) * itemsize)
    out = nl.ndarray((N, C_out, H_out, W_out), dtype=x.dtype, buffer=nl.shared_hbm)
    # Stationary operands: w_tile[ci, kh*KW + kw, co] = w[co, ci, kh, kw], one strided DMA
    # per 128 input channels.
    w_tiles = []
    for ct in range(ci_tiles):
        ci0, ci = span(ct, P_MAX, C_in)
        w_tile = nl.ndarray((ci, TAPS, C_out), dtype=w.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=w_tile, src=w.ap([[TAPS, ci], [1, TAPS], [C_in * TAPS, C_out]],
                                           offset=ci0 * TAPS))
        w_tiles.append(w_tile)
    for n in nl.affine_range(N):
        # The padded image, per 128 input channels: zero border, interior by DMA.
        images = []
        for ct in range(ci_tiles):
            ci0, ci = span(ct, P_MAX, C_in)
            image = nl.ndarray((ci, Hp, Wp), dtype=x.dtype, buffer=nl.sbuf)
            if padding:
                nisa.memset(dst=image, value=0.0)
            nisa.dma_copy(dst=image[:, padding:padding + H, padding:padding + W],
                          src=x[n, ci0:ci0 + ci, :, :])
            images.append(image)
        for co_t in nl.affine_range(cdiv(C_out, M_MAX)):
            co0, co = span(co_t, M_MAX, C_out)
            for rt in nl.affine_range(cdiv(H_out, ROWS)):
                oh0, rows = span(rt, ROWS, H_out)
                # Every (input-channel tile, tap) adds one shifted matmul into PSUM.
                res_psum = nl.ndarray((co, rows * W_out), dtype=nl.float32, buffer=nl.psum)
                for w_tile, image in zip(w_tiles, images):
                    for kh in range(KH):
                        for kw in range(KW):
                            top, left = oh0 * stride + kh, kw
                            moving = image[:, top:top + (rows - 1) * stride + 1:stride,
                                           left:left + (W_out - 1) * stride + 1:stride]
                            nisa.nc_matmul(dst=res_psum,
                                           stationary=w_tile[:, kh * KW + kw, co0:co0 + co],
                                           moving=moving)
                # Evict (cast to the output dtype) and store the rows of this tile.
                res_sb = nl.ndarray((co, rows * W_out), dtype=out.dtype, buffer=nl.sbuf)
                nisa.tensor_copy(dst=res_sb, src=res_psum)
                nisa.dma_copy(dst=out[n, co0:co0 + co, oh0:oh0 + rows, :], src=res_sb)
    return out


# ---- pooling -------------------------------------------------------------------------------------
def _pool(kernel_name: str, x: NkiTensor, kernel: int, stride: int, op: Op,
          REDUCE: str) -> NkiTensor:
    """Pooling of x [N, C, H, W] with op = nl.max or nl.add (the average scales the sum), one
    image plane per partition, H_out = (H - kernel) // stride + 1, no padding.  REDUCE="window"
    reduces every window in one `tensor_reduce` over a 4-axis access pattern; "separable"
    reduces the window's columns, then its rows: less work when windows overlap."""
    require(len(x.shape) == 4, f"{kernel_name}: x must be [N, C, H, W], got {x.shape}")
    require(REDUCE in POOL_REDUCTIONS,
            f"{kernel_name}: REDUCE={REDUCE!r} is not one of {POOL_REDUCTIONS}")
    N, C, H, W = x.shape
    require(kernel >= 1 and stride >= 1,
            f"{kernel_name}: kernel_size={kernel} and stride={stride} must be >= 1")
    require(kernel <= H and kernel <= W,
            f"{kernel_name}: kernel_size={kernel} exceeds the {H}x{W} image")
    H_out, W_out = _out_size(H, kernel, stride), _out_size(W, kernel, stride)
    require_sbuf(kernel_name, f"one {H}x{W} image plane per partition (double buffered)",
                 2 * (H * W * np.dtype(x.dtype).itemsize + 4 * (H * W_out + H_out * W_out)))
    out = nl.ndarray((N, C, H_out, W_out), dtype=x.dtype, buffer=nl.shared_hbm)
    planes = N * C
    x_planes, out_planes = x.reshape((planes, H * W)), out.reshape((planes, H_out * W_out))
    for r in nl.affine_range(cdiv(planes, P_MAX)):
        r0, p = span(r, P_MAX, planes)
        # One image plane per partition.
        x_tile = nl.ndarray((p, H * W), dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=x_tile, src=x_planes[r0:r0 + p, :])
        pooled = nl.ndarray((p, H_out, W_out), dtype=nl.float32, buffer=nl.sbuf)
        if REDUCE == "window":
            # All windows at once: [oh, ow, i, j] -> x[oh*stride + i, ow*stride + j].
            windows = x_tile.ap([[H * W, p], [stride * W, H_out], [stride, W_out], [W, kernel],
                                 [1, kernel]])
            nisa.tensor_reduce(dst=pooled, op=op, data=windows, axis=(3, 4))
        else:
            # Columns of each window first: [h, ow, j] -> x[h, ow*stride + j] (a maximum is
            # exact in x's dtype, which halves the next step's cost for bf16; sums stay fp32) ...
            partial_dtype = x.dtype if op is nl.max else nl.float32
            column_pooled = nl.ndarray((p, H, W_out), dtype=partial_dtype, buffer=nl.sbuf)
            nisa.tensor_reduce(dst=column_pooled, op=op, axis=3,
                               data=x_tile.ap([[H * W, p], [W, H], [stride, W_out],
                                               [1, kernel]]))
            # ... then its rows: [oh, i, ow] -> column_pooled[oh*stride + i, ow], reducing the
            # middle axis so the innermost stays contiguous (no stride penalty).
            nisa.tensor_reduce(dst=pooled, op=op, axis=2,
                               data=column_pooled.ap([[H * W_out, p], [stride * W_out, H_out],
                                                      [W_out, kernel], [1, W_out]]))
        # The average divides the window sum; both round to the output dtype here.
        y_tile = nl.ndarray((p, H_out * W_out), dtype=out.dtype, buffer=nl.sbuf)
        if op is nl.add:
            nisa.tensor_scalar(dst=y_tile, data=pooled, op0=nl.multiply,
                               operand0=1.0 / (kernel * kernel))
        else:
            nisa.tensor_copy(dst=y_tile, src=pooled)
        nisa.dma_copy(dst=out_planes[r0:r0 + p, :], src=y_tile)
    return out


@jit
def avgpool(x: NkiTensor, kernel_size: int = 2, stride: int = 2,
            REDUCE: str = "window") -> NkiTensor:
    """2-D average pooling of x [N, C, H, W] over kernel_size^2 windows, no padding."""
    return _pool("avgpool", x, kernel_size, stride, nl.add, REDUCE)


@jit
def maxpool(x: NkiTensor, kernel_size: int = 2, stride: int = 2,
            REDUCE: str = "window") -> NkiTensor:
    """2-D max pooling of x [N, C, H, W] over kernel_size^2 windows, no padding."""
    return _pool("maxpool", x, kernel_size, stride, nl.max, REDUCE)
