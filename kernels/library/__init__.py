"""The kernel library: NKI-style kernels with numpy goldens, and `LIBRARY`, the one table that
names them for the command line, the tests and the benchmarks.

    from kernels.library import LIBRARY
    entry = LIBRARY["matmul"]
    arrays = entry.inputs({"M": 256}, dtype="bf16")
    result = simulate(entry.kernel)(*arrays, **entry.kernel_kwargs(layout={"TILES_IN_BLOCK_K": 2}))
    golden = entry.reference(arrays)

Tolerances (|result - golden| <= atol + rtol * |golden|, goldens in float64 from the same
rounded inputs): fp32 results differ from the golden by fp32 rounding of the engines' fp32
arithmetic, accumulated over the reduction length; bf16 results are rounded once to bf16
(relative error <= 2^-9 ~ 0.002), and kernels whose intermediates are bf16 matmul operands
(attention's P, the MLP's hidden layer) add that rounding once more.
"""

from __future__ import annotations

from types import MappingProxyType

from kernels.library import attention, conv, elementwise, matmul, mlp, norms, softmax, transpose
from kernels.library import inputs as make
from kernels.library.common import LayoutError
from kernels.library.registry import DTYPES, LibraryKernel, Param, Tolerance

__all__ = ["DTYPES", "LIBRARY", "LayoutError", "LibraryKernel", "Param", "Tolerance"]


def _tolerance(fp32: tuple[float, float], bf16: tuple[float, float]
               ) -> tuple[tuple[str, Tolerance], ...]:
    return (("fp32", Tolerance(*fp32)), ("bf16", Tolerance(*bf16)))


def _size(name: str, default: int, help: str) -> Param:
    return Param(name, default, help)


# ---- matmul family -------------------------------------------------------------------------------
_MATMUL_SHAPES = (_size("M", 512, "rows of the result (lhsT columns)"),
                  _size("N", 512, "columns of the result (rhs columns)"),
                  _size("K", 1024, "contraction length (rows of lhsT and rhs)"))
_MATMUL_TILES = (
    Param("TILE_M", 128, "stationary tile: result rows per matmul", (32, 64, 128)),
    Param("TILE_K", 128, "contraction rows per matmul (partitions)", (32, 64, 128)),
    Param("TILE_N", 512, "moving tile: result columns per matmul", (128, 256, 512)))
# fp32: K products summed in fp32 (error ~ sqrt(K) ulps of the partial sums); bf16: one
# rounding of the fp32 result.
_MATMUL_TOLERANCE = _tolerance(fp32=(1e-5, 1e-4), bf16=(1e-2, 1e-3))
_MATMUL_SIGNATURE = "lhsT [K, M], rhs [K, N] -> [M, N] = lhsT.T @ rhs"


def _matmul(name: str, summary: str, kernel, shapes=_MATMUL_SHAPES, layout=(), notes=""):
    return LibraryKernel(name, summary, _MATMUL_SIGNATURE, kernel, matmul.matmul_golden,
                         make.matmul_inputs, shapes, _MATMUL_TOLERANCE, layout=layout,
                         notes=notes)


_MATMULS = (
    _matmul("matmul_basic", "one nc_matmul (tutorial step 1)", matmul.matmul_basic,
            shapes=(_size("M", 128, "result rows, <= 128"), _size("N", 512, "result columns, "
                    "<= 512"), _size("K", 128, "contraction length, <= 128"))),
    _matmul("matmul_naive", "tiled, loads both operands for every matmul (step 2)",
            matmul.matmul_naive, layout=_MATMUL_TILES, notes="any M, N, K (ragged tiles)"),
    _matmul("matmul_hoisted", "tiled, operand columns loaded once per M/N tile (step 3)",
            matmul.matmul_hoisted, layout=_MATMUL_TILES, notes="any M, N, K (ragged tiles)"),
    _matmul("matmul_blocked", "blocks of result tiles reuse loaded tiles (step 4)",
            matmul.matmul_blocked, layout=(
                Param("TILES_IN_BLOCK_M", 2, "result tiles per block along M", (1, 2, 4, 8)),
                Param("TILES_IN_BLOCK_N", 1, "result tiles per block along N", (1, 2, 4)),
                *_MATMUL_TILES),
            notes="M, N multiples of the blocks, K of TILE_K"),
    _matmul("matmul", "fully blocked, K blocks accumulated in SBUF (step 5)", matmul.matmul,
            layout=(
                Param("TILES_IN_BLOCK_M", 2, "result tiles per block along M",
                      (1, 2, 4, 8, 16)),
                Param("TILES_IN_BLOCK_N", 1, "result tiles per block along N", (1, 2, 4)),
                Param("TILES_IN_BLOCK_K", 4, "K tiles per block (summed in PSUM)",
                      (1, 2, 4, 8, 16)),
                *_MATMUL_TILES),
            notes="M, N, K multiples of the blocks"),
)

# ---- element-wise --------------------------------------------------------------------------------
_ROWS_COLS = (_size("rows", 256, "rows (partitions, 128 per tile)"),
              _size("cols", 1024, "columns (free axis)"))
_F_TILE = Param("F_TILE", 2048, "free elements per tile", (256, 512, 1024, 2048, 4096))
_BROADCAST = Param("broadcast", "none", "shape of y: none [rows, cols], row [1, cols], vector "
                   "[cols], column [rows, 1], scalar [1, 1]", tuple(make.BROADCASTS),
                   to_kernel=False)
# fp32: exact ALU ops round once (divide included); bf16: one rounding of the result.
_BINARY_TOLERANCE = _tolerance(fp32=(1e-6, 1e-6), bf16=(1e-2, 1e-5))
# fp32: the emulator's transcendental functions match numpy to a few fp32 ulps (its erf is
# accurate to 1.5e-7); bf16: one rounding of the result.
_UNARY_TOLERANCE = _tolerance(fp32=(1e-5, 1e-6), bf16=(1e-2, 1e-5))


def _binary(op: str) -> LibraryKernel:
    return LibraryKernel(
        op, f"element-wise {op} with numpy broadcasting (Vector engine)",
        "x [rows, cols], y broadcastable -> [rows, cols]", elementwise.binary,
        elementwise.binary_golden, make.binary_inputs(op == "divide"), _ROWS_COLS,
        _BINARY_TOLERANCE, options=(_BROADCAST,), layout=(_F_TILE,), fixed=(("op", op),))


def _unary(op: str) -> LibraryKernel:
    return LibraryKernel(
        op, f"element-wise {op} (Scalar-engine activation)", "x [rows, cols] -> [rows, cols]",
        elementwise.unary, elementwise.unary_golden, make.unary_inputs(op), _ROWS_COLS,
        _UNARY_TOLERANCE, layout=(_F_TILE,), fixed=(("op", op),))


_ELEMENTWISE = (*(_binary(op) for op in elementwise.BINARY_OPS),
                *(_unary(op) for op in elementwise.UNARY_OPS))

# ---- row-wise: softmax and norms -----------------------------------------------------------------
_APPLY_ENGINE = Param("APPLY_ENGINE", "vector", "engine of the per-row x * rstd step",
                      norms.APPLY_ENGINES)
# fp32: statistics in fp32 over `cols` elements; bf16: one rounding of the result.
_ROW_TOLERANCE = _tolerance(fp32=(1e-5, 1e-5), bf16=(1e-2, 1e-4))

_ROWWISE = (
    LibraryKernel("softmax", "numerically stable row softmax", "x [rows, cols] -> [rows, cols]",
                  softmax.softmax, softmax.softmax_golden, make.rows_inputs, _ROWS_COLS,
                  _tolerance(fp32=(1e-5, 1e-7), bf16=(1e-2, 1e-6)), layout=(
                      Param("NORMALIZE", "reciprocal", "reciprocal then multiply, or divide",
                            softmax.NORMALIZATIONS),)),
    LibraryKernel("layernorm", "layer norm with bn_stats/bn_aggr statistics",
                  "x [rows, cols], gamma [cols], beta [cols] -> [rows, cols]", norms.layernorm,
                  norms.layernorm_golden, make.layernorm_inputs, _ROWS_COLS, _ROW_TOLERANCE,
                  options=(Param("eps", 1e-5, "added to the variance"),),
                  layout=(_APPLY_ENGINE,)),
    LibraryKernel("layernorm_naive", "layer norm with mean/variance by reductions",
                  "x [rows, cols], gamma [cols], beta [cols] -> [rows, cols]",
                  norms.layernorm_naive, norms.layernorm_golden, make.layernorm_inputs,
                  _ROWS_COLS, _ROW_TOLERANCE,
                  options=(Param("eps", 1e-5, "added to the variance"),),
                  layout=(_APPLY_ENGINE,)),
    LibraryKernel("rmsnorm", "RMS norm", "x [rows, cols], gamma [cols] -> [rows, cols]",
                  norms.rmsnorm, norms.rmsnorm_golden, make.rmsnorm_inputs, _ROWS_COLS,
                  _ROW_TOLERANCE, options=(Param("eps", 1e-6, "added to the mean square"),),
                  layout=(_APPLY_ENGINE,)),
)

# ---- transposes ----------------------------------------------------------------------------------
_EXACT = _tolerance(fp32=(0.0, 0.0), bf16=(0.0, 0.0))  # data movement only: bit-exact
_TRANSPOSES = (
    LibraryKernel("transpose", "2-D transpose on the Tensor engine (nc_transpose via PSUM)",
                  "x [rows, cols] -> [cols, rows]", transpose.transpose,
                  transpose.transpose_golden, make.rows_inputs, _ROWS_COLS, _EXACT,
                  layout=(Param("BANDS_PER_STORE", 4, "128-row bands per PSUM tile and store",
                                (1, 2, 4)),)),
    LibraryKernel("transpose_dma", "2-D transpose by strided DMA loads",
                  "x [rows, cols] -> [cols, rows]", transpose.transpose_dma,
                  transpose.transpose_golden, make.rows_inputs, _ROWS_COLS, _EXACT,
                  layout=(Param("TILE_R", 512, "rows of x per DMA", (128, 256, 512, 1024)),)),
)

# ---- convolution and pooling ---------------------------------------------------------------------
_CONV_SHAPES = (_size("batch", 1, "images"), _size("c_in", 64, "input channels"),
                _size("height", 16, "image rows"), _size("width", 16, "image columns"),
                _size("c_out", 64, "output channels"), _size("kernel_h", 3, "filter rows"),
                _size("kernel_w", 3, "filter columns"))
_POOL_SHAPES = (_size("batch", 2, "images"), _size("channels", 64, "channels"),
                _size("height", 16, "image rows"), _size("width", 16, "image columns"))
_POOL_OPTIONS = (Param("kernel_size", 2, "window size (square)", (1, 2, 3, 4)),
                 Param("stride", 2, "window step", (1, 2, 3, 4)))
_POOL_REDUCE = Param("REDUCE", "window", "one reduction per window, or columns then rows",
                     conv.POOL_REDUCTIONS)
_CONV = (
    LibraryKernel("conv2d", "2-D convolution, NCHW, implicit GEMM (shifted matmuls in PSUM)",
                  "x [batch, c_in, height, width], w [c_out, c_in, kernel_h, kernel_w] -> "
                  "[batch, c_out, out_h, out_w]", conv.conv2d, conv.conv2d_golden,
                  make.conv2d_inputs, _CONV_SHAPES,
                  _tolerance(fp32=(1e-5, 1e-5), bf16=(1e-2, 1e-3)),
                  options=(Param("stride", 1, "filter step", (1, 2, 3)),
                           Param("padding", 0, "zero border", (0, 1, 2, 3))),
                  layout=(Param("TILE_N", 512, "output pixels per matmul (whole rows)",
                                (64, 128, 256, 512)),)),
    LibraryKernel("avgpool", "2-D average pooling, NCHW, no padding",
                  "x [batch, channels, height, width] -> [batch, channels, out_h, out_w]",
                  conv.avgpool, conv.avgpool_golden, make.pool_inputs, _POOL_SHAPES,
                  _tolerance(fp32=(1e-6, 1e-6), bf16=(1e-2, 1e-5)), options=_POOL_OPTIONS,
                  layout=(_POOL_REDUCE,)),
    LibraryKernel("maxpool", "2-D max pooling, NCHW, no padding",
                  "x [batch, channels, height, width] -> [batch, channels, out_h, out_w]",
                  conv.maxpool, conv.maxpool_golden, make.pool_inputs, _POOL_SHAPES, _EXACT,
                  options=_POOL_OPTIONS, layout=(_POOL_REDUCE,)),
)

# ---- attention and MLP ---------------------------------------------------------------------------
_MODELS = (
    LibraryKernel("attention", "flash attention: KV tiles, running max/sum, optional causal mask",
                  "q, k, v [batch, heads, seq, head_dim] -> [batch, heads, seq, head_dim]",
                  attention.attention, attention.attention_golden, make.attention_inputs,
                  (_size("batch", 1, "batch"), _size("heads", 2, "heads"),
                   _size("seq", 512, "sequence length (queries and keys)"),
                   _size("head_dim", 64, "head size, <= 128")),
                  # bf16: P is rounded to bf16 before P V, as well as the result.
                  _tolerance(fp32=(1e-5, 1e-5), bf16=(2e-2, 2e-2)),
                  options=(Param("causal", False, "mask keys after the query", (False, True)),),
                  layout=(Param("KV_TILE", 512, "keys per tile", (128, 256, 512)),)),
    LibraryKernel("mlp", "MLP block act(x @ w1) @ w2, weights resident in SBUF",
                  "x [tokens, d_model], w1 [d_model, d_ff], w2 [d_ff, d_model] -> "
                  "[tokens, d_model]", mlp.mlp, mlp.mlp_golden, make.mlp_inputs,
                  (_size("tokens", 512, "tokens"), _size("d_model", 256, "model width"),
                   _size("d_ff", 1024, "hidden width")),
                  # bf16: the hidden layer is rounded to bf16 before the second matmul.
                  _tolerance(fp32=(1e-5, 1e-5), bf16=(2e-2, 2e-2)),
                  options=(Param("activation", "gelu", "hidden activation",
                                 tuple(mlp.ACTIVATIONS)),),
                  layout=(Param("TOKEN_TILE", 512, "tokens per moving tile", (128, 256, 512)),)),
)


def _table(*groups: tuple[LibraryKernel, ...]) -> MappingProxyType:
    entries: dict[str, LibraryKernel] = {}
    for entry in (e for group in groups for e in group):
        if entry.name in entries:
            raise ValueError(f"library kernel {entry.name} is registered twice")
        entries[entry.name] = entry
    return MappingProxyType(entries)


LIBRARY = _table(_MATMULS, _ELEMENTWISE, _ROWWISE, _TRANSPOSES, _CONV, _MODELS)
