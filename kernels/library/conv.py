"""2-D convolution as an implicit GEMM (shifted matmuls accumulating in PSUM, no im2col matrix)
and 2-D average / max pooling, all in NCHW layout.  Channels lie on the partitions: input
channels are the contraction axis of the convolution, each image plane one partition of a pool.
"""

from __future__ import annotations

import numpy as np

from kernels.library.common import (
    cdiv,
    require,
    require_sbuf,
    sbuf_partition_bytes,
    span,
    spans,
)
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
# Activations the convolution's epilogue may apply while evicting PSUM.
CONV_ACTIVATIONS = {"none": None, "relu": nl.relu, "gelu": nl.gelu, "silu": nl.silu,
                    "tanh": nl.tanh, "sigmoid": nl.sigmoid}
WEIGHT_LAYOUTS = ("OIHW", "IHWO")


def _padding(padding: int | tuple[int, ...]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from one int or a 4-tuple."""
    pads = (padding,) * 4 if isinstance(padding, (int, np.integer)) else tuple(padding)
    require(len(pads) == 4 and all(int(p) >= 0 for p in pads),
            f"conv2d: padding={padding!r} must be an int >= 0 or (top, left, bottom, right)")
    return tuple(int(p) for p in pads)


@jit
def conv2d(x: NkiTensor, w: NkiTensor, stride: int = 1, padding: int = 0,
           TILE_N: int = N_MAX, bias: NkiTensor | None = None, activation: str = "none",
           TILE_M: int = M_MAX, WEIGHTS: str = "OIHW") -> NkiTensor:
    """out [N, C_out, H_out, W_out] = conv(x [N, C_in, H, W], w [C_out, C_in, KH, KW]),
    H_out = (H + top + bottom - KH) // stride + 1 (W likewise); `padding` is one int or
    (top, left, bottom, right).

    Each padded image is loaded once (a zero memset, then the interior by DMA) when it fits
    SBUF; a larger one is loaded as bands of input rows, one per tile of output rows.  For each
    filter tap (kh, kw) the moving operand is a strided view of it, rows oh * stride + kh and
    columns ow * stride + kw, and the KH * KW * ceil(C_in / 128) matmuls of an output tile
    accumulate in PSUM.  The stationary w[:, ci, kh, kw].T come from one DMA of w per 128 input
    channels: strided for w in OIHW (PyTorch's layout), contiguous for WEIGHTS="IHWO" (w given
    as [C_in, KH, KW, C_out], the layout a compiler prepares offline).  TILE_N output pixels
    (whole output rows) make one matmul's moving free size, TILE_M output channels its
    stationary one.  Optional epilogue: per-channel bias [C_out] and `activation`, applied by
    the Scalar engine on the way out of PSUM.
    """
    require(len(x.shape) == 4 and len(w.shape) == 4,
            f"conv2d: x must be [N, C_in, H, W] and w [C_out, C_in, KH, KW], got {x.shape} "
            f"and {w.shape}")
    require(WEIGHTS in WEIGHT_LAYOUTS,
            f"conv2d: WEIGHTS={WEIGHTS!r} is not one of {WEIGHT_LAYOUTS}")
    N, C_in, H, W = x.shape
    if WEIGHTS == "OIHW":
        C_out, C_in_w, KH, KW = w.shape
    else:
        C_in_w, KH, KW, C_out = w.shape
    require(C_in == C_in_w, f"conv2d: x has C_in={C_in} channels, w expects {C_in_w}")
    top, left, bottom, right = _padding(padding)
    require(stride >= 1, f"conv2d: stride={stride} must be >= 1 and padding={padding} >= 0")
    Hp, Wp = H + top + bottom, W + left + right
    H_out, W_out = _out_size(Hp, KH, stride), _out_size(Wp, KW, stride)
    require(H_out >= 1 and W_out >= 1,
            f"conv2d: a {KH}x{KW} filter does not fit the padded {H}x{W} image")
    require(1 <= TILE_N <= N_MAX,
            f"conv2d: moving tile TILE_N={TILE_N} must be 1..{N_MAX} "
            f"(nl.tile_size.gemm_moving_fmax)")
    require(1 <= TILE_M <= M_MAX,
            f"conv2d: stationary tile TILE_M={TILE_M} must be 1..{M_MAX} "
            f"(nl.tile_size.gemm_stationary_fmax)")
    require(W_out <= TILE_N,
            f"conv2d: an output row of W_out={W_out} pixels exceeds the moving tile "
            f"TILE_N={TILE_N}; each matmul covers whole output rows")
    require(activation in CONV_ACTIVATIONS,
            f"conv2d: activation={activation!r} is not one of {sorted(CONV_ACTIVATIONS)}")
    require(bias is None or tuple(bias.shape) == (C_out,),
            f"conv2d: bias must be [C_out={C_out}], got {None if bias is None else bias.shape}")
    ROWS = min(H_out, TILE_N // W_out)  # output rows per matmul
    TAPS = KH * KW
    itemsize = np.dtype(x.dtype).itemsize
    ci_tiles = cdiv(C_in, P_MAX)
    # The whole padded image per 128 input channels if it fits beside the weights (double
    # buffered), else a band of the input rows one output row tile reads.
    whole = ci_tiles * (TAPS * C_out + 2 * Hp * Wp) * itemsize <= sbuf_partition_bytes()
    band_rows = Hp if whole else (ROWS - 1) * stride + KH
    require_sbuf("conv2d", f"{ci_tiles} weight tiles [128, {TAPS}, {C_out}] and {ci_tiles} "
                 f"padded image bands [128, {band_rows}, {Wp}] (double buffered)",
                 ci_tiles * (TAPS * C_out + 2 * band_rows * Wp) * itemsize)
    func = CONV_ACTIVATIONS[activation]
    out = nl.ndarray((N, C_out, H_out, W_out), dtype=x.dtype, buffer=nl.shared_hbm)
    # Stationary operands: w_tile[ci, kh*KW + kw, co] = w[co, ci, kh, kw], one DMA per 128
    # input channels.
    w_tiles = []
    for ct in range(ci_tiles):
        ci0, ci = span(ct, P_MAX, C_in)
        w_tile = nl.ndarray((ci, TAPS, C_out), dtype=w.dtype, buffer=nl.sbuf)
        if WEIGHTS == "OIHW":
            source = w.ap([[TAPS, ci], [1, TAPS], [C_in * TAPS, C_out]], offset=ci0 * TAPS)
        else:
            source = w.ap([[TAPS * C_out, ci], [C_out, TAPS], [1, C_out]],
                          offset=ci0 * TAPS * C_out)
        nisa.dma_copy(dst=w_tile, src=source)
        w_tiles.append(w_tile)
    # The bias of each output-channel tile, one element per partition (fp32).
    bias_tiles = []
    if bias is not None:
        for _, co0, co in spans(C_out, TILE_M):
            bias_tile = nl.ndarray((co, 1), dtype=nl.float32, buffer=nl.sbuf)
            nisa.dma_copy(dst=bias_tile, src=bias.reshape((C_out, 1))[co0:co0 + co, :])
            bias_tiles.append(bias_tile)
    for n in nl.affine_range(N):
        images = _image_band(x, n, 0, Hp, (top, left, bottom, right)) if whole else None
        for co_t in nl.affine_range(cdiv(C_out, TILE_M)):
            co0, co = span(co_t, TILE_M, C_out)
            for rt in nl.affine_range(cdiv(H_out, ROWS)):
                oh0, rows = span(rt, ROWS, H_out)
                # The padded rows this tile reads start at band row `first`.
                first = 0 if whole else oh0 * stride
                if not whole:
                    images = _image_band(x, n, first, (rows - 1) * stride + KH,
                                         (top, left, bottom, right))
                # Every (input-channel tile, tap) adds one shifted matmul into PSUM.
                res_psum = nl.ndarray((co, rows * W_out), dtype=nl.float32, buffer=nl.psum)
                for w_tile, image in zip(w_tiles, images):
                    for kh in range(KH):
                        for kw in range(KW):
                            row0 = oh0 * stride + kh - first
                            moving = image[:, row0:row0 + (rows - 1) * stride + 1:stride,
                                           kw:kw + (W_out - 1) * stride + 1:stride]
                            nisa.nc_matmul(dst=res_psum,
                                           stationary=w_tile[:, kh * KW + kw, co0:co0 + co],
                                           moving=moving)
                # Evict (bias and activation in the epilogue, cast to the output dtype), store.
                res_sb = nl.ndarray((co, rows * W_out), dtype=out.dtype, buffer=nl.sbuf)
                if bias is None and func is None:
                    nisa.tensor_copy(dst=res_sb, src=res_psum)
                else:
                    nisa.activation(dst=res_sb, op=nl.copy if func is None else func,
                                    data=res_psum,
                                    bias=bias_tiles[co_t] if bias is not None else None)
                nisa.dma_copy(dst=out[n, co0:co0 + co, oh0:oh0 + rows, :], src=res_sb)
    return out


def _image_band(x: NkiTensor, n: int, first: int, rows: int,
                pads: tuple[int, int, int, int]) -> list[NkiTensor]:
    """Rows first..first+rows-1 of image n zero-padded, per 128 input channels: a zero memset
    where the band has padding, then the rows of x it covers by DMA."""
    _, C_in, H, W = x.shape
    top, left, _, right = pads
    Wp = W + left + right
    # x rows inside the band (padded row r is x row r - top).
    x0, x1 = max(0, first - top), min(H, first + rows - top)
    padded = left or right or first < top or first + rows > top + H
    images = []
    for ct in range(cdiv(C_in, P_MAX)):
        ci0, ci = span(ct, P_MAX, C_in)
        image = nl.ndarray((ci, rows, Wp), dtype=x.dtype, buffer=nl.sbuf)
        if padded:
            nisa.memset(dst=image, value=0.0)
        if x1 > x0:
            r0 = x0 + top - first
            nisa.dma_copy(dst=image[:, r0:r0 + x1 - x0, left:left + W],
                          src=x[n, ci0:ci0 + ci, x0:x1, :])
        images.append(image)
    return images


# ---- pooling -------------------------------------------------------------------------------------
def _pool(kernel_name: str, x: NkiTensor, kernel: int, stride: int, op: Op,
          REDUCE: str, padding: int = 0) -> NkiTensor:
    """Pooling of x [N, C, H, W] with op = nl.max or nl.add (the average scales the sum), one
    image plane per partition (in bands of output rows when a plane does not fit SBUF),
    H_out = (H + 2 * padding - kernel) // stride + 1.  A padded
    plane is filled with -inf (max) or 0 (average: the padding counts in the window, as
    PyTorch's count_include_pad) before its interior is loaded.  REDUCE="window" reduces every
    window in one `tensor_reduce` over a 4-axis access pattern; "separable" reduces the window's
    columns, then its rows: less work when windows overlap."""
    require(len(x.shape) == 4, f"{kernel_name}: x must be [N, C, H, W], got {x.shape}")
    require(REDUCE in POOL_REDUCTIONS,
            f"{kernel_name}: REDUCE={REDUCE!r} is not one of {POOL_REDUCTIONS}")
    N, C, H, W = x.shape
    require(kernel >= 1 and stride >= 1,
            f"{kernel_name}: kernel_size={kernel} and stride={stride} must be >= 1")
    require(0 <= padding < kernel,
            f"{kernel_name}: padding={padding} must be 0..kernel_size-1={kernel - 1}")
    Hp, Wp = H + 2 * padding, W + 2 * padding
    require(kernel <= Hp and kernel <= Wp,
            f"{kernel_name}: kernel_size={kernel} exceeds the {H}x{W} image")
    H_out, W_out = _out_size(Hp, kernel, stride), _out_size(Wp, kernel, stride)
    itemsize = np.dtype(x.dtype).itemsize

    def band_bytes(rows_out: int) -> int:  # double-buffered input band + fp32 partials
        rows_in = (rows_out - 1) * stride + kernel
        return 2 * (rows_in * Wp * itemsize + 4 * (rows_in * W_out + rows_out * W_out))

    # Bands of output rows, as many as fit one SBUF partition (the whole plane when it fits).
    band = H_out
    while band > 1 and band_bytes(band) > sbuf_partition_bytes():
        band = (band + 1) // 2
    require_sbuf(kernel_name, f"a band of {band} output rows of a {Hp}x{Wp} image plane per "
                 f"partition (double buffered)", band_bytes(band))
    out = nl.ndarray((N, C, H_out, W_out), dtype=x.dtype, buffer=nl.shared_hbm)
    planes = N * C
    x_planes, out_planes = x.reshape((planes, H * W)), out.reshape((planes, H_out * W_out))
    for r in nl.affine_range(cdiv(planes, P_MAX)):
        r0, p = span(r, P_MAX, planes)
        for o in nl.affine_range(cdiv(H_out, band)):
            o0, rows_out = span(o, band, H_out)
            top = o0 * stride  # first padded input row of this band
            rows_in = (rows_out - 1) * stride + kernel
            # The band's (padded) rows, one image plane per partition; real rows are
            # [padding, padding + H) of the padded plane.
            x_tile = nl.ndarray((p, rows_in * Wp), dtype=x.dtype, buffer=nl.sbuf)
            first, last = max(top, padding), min(top + rows_in, padding + H)
            if padding:
                nisa.memset(dst=x_tile, value=float("-inf") if op is nl.max else 0.0)
            if padding or rows_in != Hp:
                interior = x_tile.ap([[rows_in * Wp, p], [Wp, last - first], [1, W]],
                                     offset=(first - top) * Wp + padding)
                nisa.dma_copy(dst=interior, src=x_planes[r0:r0 + p, (first - padding) * W:
                                                         (last - padding) * W])
            else:
                nisa.dma_copy(dst=x_tile, src=x_planes[r0:r0 + p, :])
            pooled = nl.ndarray((p, rows_out, W_out), dtype=nl.float32, buffer=nl.sbuf)
            if REDUCE == "window":
                # All windows at once: [oh, ow, i, j] -> x[oh*stride + i, ow*stride + j].
                windows = x_tile.ap([[rows_in * Wp, p], [stride * Wp, rows_out],
                                     [stride, W_out], [Wp, kernel], [1, kernel]])
                nisa.tensor_reduce(dst=pooled, op=op, data=windows, axis=(3, 4))
            else:
                # Columns of each window first: [h, ow, j] -> x[h, ow*stride + j] (a maximum
                # is exact in x's dtype, which halves the next step's cost for bf16; sums
                # stay fp32) ...
                partial_dtype = x.dtype if op is nl.max else nl.float32
                column_pooled = nl.ndarray((p, rows_in, W_out), dtype=partial_dtype,
                                           buffer=nl.sbuf)
                nisa.tensor_reduce(dst=column_pooled, op=op, axis=3,
                                   data=x_tile.ap([[rows_in * Wp, p], [Wp, rows_in],
                                                   [stride, W_out], [1, kernel]]))
                # ... then its rows: [oh, i, ow] -> column_pooled[oh*stride + i, ow], reducing
                # the middle axis so the innermost stays contiguous (no stride penalty).
                nisa.tensor_reduce(dst=pooled, op=op, axis=2,
                                   data=column_pooled.ap([[rows_in * W_out, p],
                                                          [stride * W_out, rows_out],
                                                          [W_out, kernel], [1, W_out]]))
            # The average divides the window sum; both round to the output dtype here.
            y_tile = nl.ndarray((p, rows_out * W_out), dtype=out.dtype, buffer=nl.sbuf)
            if op is nl.add:
                nisa.tensor_scalar(dst=y_tile, data=pooled, op0=nl.multiply,
                                   operand0=1.0 / (kernel * kernel))
            else:
                nisa.tensor_copy(dst=y_tile, src=pooled)
            nisa.dma_copy(dst=out_planes[r0:r0 + p, o0 * W_out:(o0 + rows_out) * W_out],
                          src=y_tile)
    return out


@jit
def avgpool(x: NkiTensor, kernel_size: int = 2, stride: int = 2, REDUCE: str = "window",
            padding: int = 0) -> NkiTensor:
    """2-D average pooling of x [N, C, H, W] over kernel_size^2 windows; zero padding counts
    in the window (count_include_pad)."""
    return _pool("avgpool", x, kernel_size, stride, nl.add, REDUCE, padding)


@jit
def maxpool(x: NkiTensor, kernel_size: int = 2, stride: int = 2, REDUCE: str = "window",
            padding: int = 0) -> NkiTensor:
    """2-D max pooling of x [N, C, H, W] over kernel_size^2 windows; padding is -inf."""
    return _pool("maxpool", x, kernel_size, stride, nl.max, REDUCE, padding)
