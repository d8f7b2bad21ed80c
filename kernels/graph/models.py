"""Model builders: operator graphs of common networks with seeded random weights (no downloads).

* `mlp`: matmul + bias + activation layers.
* `bert`: a BERT encoder (post-LN; word + position + token-type embeddings, additive attention
  mask from a 0/1 `attention_mask`, exact-erf GELU); `BERT_BASE`, `BERT_LARGE` presets.
* `gpt_block`, `gpt_prefill`, `gpt_decode`: GPT-2 (pre-LN, causal attention, tanh GELU, LM head
  tied to the token embedding).  Prefill returns the logits and each layer's key/value cache;
  a decode step takes the caches as inputs and returns them one position longer.
* `resnet`: ResNet-18/34 (basic blocks) and -50/101/152 (bottlenecks, stride on the 3x3 as in
  torchvision v1.5).  Batch norm is folded into each convolution's weights and bias, as for
  inference; the last convolution of each residual branch starts at 0.2 x He scale (in the
  spirit of zero-init residuals) so activations stay bounded without batch norm.

Builders emit primitive operators (matmul, add, gelu, layernorm ...); the compiler fuses them.
Reshapes leave the batch dimension to inference (-1), so a graph re-batches (`with_input` and
the inference pass) and splits data parallel.
Layers are builder scopes (`embeddings`, `layer0`, ... / `h0` ... / `stem`, `stage1.block0` ...),
which pipeline partitioning uses.  Weights are made lazily, so BERT-large and ResNet-50 build
in well under a second; two graphs built with the same seed share weights by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from kernels.graph.ir import Graph
from kernels.graph.tensor import GraphError, Value


def _positive(record: object, *names: str) -> None:
    for name in names:
        value = getattr(record, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GraphError(f"{type(record).__name__}.{name}={value!r} must be a positive int")


def dense(g: Graph, x: Value, n_out: int, name: str, bias: bool = True,
          scale: float = 0.02) -> Value:
    """x @ weight[K, n_out] (+ bias[n_out]) as matmul and add nodes."""
    k = g.type_of(x).shape[-1]
    y = g.apply("matmul", x, g.weight(f"{name}.weight", (k, n_out), scale=scale), name=name)
    if bias:
        y = g.apply("add", y, g.weight(f"{name}.bias", (n_out,)), name=f"{name}.add")
    return y


def layernorm(g: Graph, x: Value, name: str, eps: float) -> Value:
    n = g.type_of(x).shape[-1]
    gamma = g.weight(f"{name}.gamma", (n,), scale=0.1, offset=1.0)
    beta = g.weight(f"{name}.beta", (n,))
    return g.apply("layernorm", x, gamma, beta, eps=eps, name=name)


# ---- MLP --------------------------------------------------------------------------------------
def mlp(sizes: Sequence[int] = (784, 256, 10), batch: int = 8, activation: str = "relu",
        seed: int = 0) -> Graph:
    """x[batch, sizes[0]] through dense layers of `sizes`, `activation` between them."""
    if len(sizes) < 2 or any(s < 1 for s in sizes) or batch < 1:
        raise GraphError(f"mlp: sizes {tuple(sizes)} need two or more positive widths")
    g = Graph("mlp", seed)
    h = g.input("x", (batch, sizes[0]))
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        with g.scope(f"fc{i}"):
            h = dense(g, h, n, "linear", scale=1.0 / math.sqrt(k))
            if i < len(sizes) - 2:
                h = g.apply(activation, h)
    g.output("logits", h)
    return g


# ---- BERT -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BertConfig:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    ffn: int = 3072
    seq_len: int = 128
    batch: int = 1
    vocab: int = 30522
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12

    def __post_init__(self) -> None:
        _positive(self, "layers", "hidden", "heads", "ffn", "seq_len", "batch", "vocab",
                  "max_positions", "type_vocab")
        if self.hidden % self.heads:
            raise GraphError(f"BertConfig: hidden={self.hidden} must divide by heads="
                             f"{self.heads}")
        if self.seq_len > self.max_positions:
            raise GraphError(f"BertConfig: seq_len={self.seq_len} exceeds max_positions="
                             f"{self.max_positions}")


BERT_BASE = BertConfig()
BERT_LARGE = BertConfig(layers=24, hidden=1024, heads=16, ffn=4096)


def _heads(g: Graph, x: Value, heads: int) -> Value:
    """[B, S, H] -> [B, heads, S, H/heads] (the batch left to inference, so graphs re-batch)."""
    _, seq, hidden = g.type_of(x).shape
    x = g.apply("reshape", x, shape=(-1, seq, heads, hidden // heads))
    return g.apply("transpose", x, perm=(0, 2, 1, 3))


def _merge_heads(g: Graph, x: Value) -> Value:
    """[B, heads, S, D] -> [B, S, heads * D]."""
    _, h, s, d = g.type_of(x).shape
    x = g.apply("transpose", x, perm=(0, 2, 1, 3))
    return g.apply("reshape", x, shape=(-1, s, h * d))


def bert(config: BertConfig = BERT_BASE, seed: int = 0, **overrides: object) -> Graph:
    """A BERT encoder: inputs input_ids, token_type_ids [B, S] int32 and attention_mask [B, S]
    (1 = attend, 0 = padding); output last_hidden_state [B, S, hidden]."""
    c = replace(config, **overrides) if overrides else config
    b, s, h = c.batch, c.seq_len, c.hidden
    g = Graph(f"bert_{c.layers}x{h}", seed)
    ids = g.input("input_ids", (b, s), "int32")
    token_types = g.input("token_type_ids", (b, s), "int32")
    mask = g.input("attention_mask", (b, s))
    with g.scope("embeddings"):
        x = g.apply("gather", g.weight("word", (c.vocab, h)), ids)
        positions = g.constant(np.arange(s, dtype=np.int32), "position_ids")
        x = g.apply("add", x, g.apply("gather", g.weight("position", (c.max_positions, h)),
                                      positions))
        x = g.apply("add", x, g.apply("gather", g.weight("token_type", (c.type_vocab, h)),
                                      token_types))
        x = layernorm(g, x, "ln", c.eps)
        # additive mask [B, 1, 1, S]: 0 where attended, -10000 at padding (as BERT does)
        keep = g.apply("reshape", mask, shape=(-1, 1, 1, s))
        dropped = g.apply("sub", g.constant(np.float32(1.0), "one"), keep)
        additive = g.apply("mul", dropped, g.constant(np.float32(-10000.0), "mask_value"))
    for i in range(c.layers):
        with g.scope(f"layer{i}"):
            q = _heads(g, dense(g, x, h, "attention.query"), c.heads)
            k = _heads(g, dense(g, x, h, "attention.key"), c.heads)
            v = _heads(g, dense(g, x, h, "attention.value"), c.heads)
            context = _merge_heads(g, g.apply("attention", q, k, v, additive))
            attn = dense(g, context, h, "attention.output")
            x = layernorm(g, g.apply("add", attn, x), "attention.ln", c.eps)
            inner = g.apply("gelu", dense(g, x, c.ffn, "intermediate"))
            out = dense(g, inner, h, "output")
            x = layernorm(g, g.apply("add", out, x), "output.ln", c.eps)
    g.output("last_hidden_state", x)
    return g


# ---- GPT-2 ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GptConfig:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    vocab: int = 50257
    max_positions: int = 1024
    eps: float = 1e-5

    def __post_init__(self) -> None:
        _positive(self, "layers", "hidden", "heads", "vocab", "max_positions")
        if self.hidden % self.heads:
            raise GraphError(f"GptConfig: hidden={self.hidden} must divide by heads="
                             f"{self.heads}")


GPT2_SMALL = GptConfig()


def gpt_block(g: Graph, x: Value, config: GptConfig,
              past: tuple[Value, Value] | None = None) -> tuple[Value, Value, Value]:
    """One pre-LN GPT-2 block on x [B, S, H] in the current scope; (x, key, value) where key and
    value [B, heads, past + S, H/heads] include the `past` cache if given."""
    h = g.type_of(x).shape[-1]
    a = layernorm(g, x, "ln_1", config.eps)
    qkv = dense(g, a, 3 * h, "attn.c_attn")
    q, k, v = (_heads(g, t, config.heads)
               for t in g.apply("split", qkv, axis=-1, sizes=(h, h, h)))
    if past is not None:
        k = g.apply("concat", past[0], k, axis=2, name="attn.present_key")
        v = g.apply("concat", past[1], v, axis=2, name="attn.present_value")
    a = _merge_heads(g, g.apply("attention", q, k, v, causal=True))
    x = g.apply("add", x, dense(g, a, h, "attn.c_proj"))
    m = layernorm(g, x, "ln_2", config.eps)
    m = g.apply("gelu", dense(g, m, 4 * h, "mlp.c_fc"), approximate="tanh")
    x = g.apply("add", x, dense(g, m, h, "mlp.c_proj"))
    return x, k, v


def gpt_block_graph(config: GptConfig = GPT2_SMALL, batch: int = 1, seq_len: int = 128,
                    seed: int = 0) -> Graph:
    """A graph of one GPT-2 block: input x [B, S, H] -> output y."""
    g = Graph("gpt_block", seed)
    x = g.input("x", (batch, seq_len, config.hidden))
    with g.scope("h0"):
        y, _, _ = gpt_block(g, x, config)
    g.output("y", y)
    return g


def _gpt(config: GptConfig, batch: int, seq_len: int, past_len: int | None, seed: int) -> Graph:
    c = config
    start = past_len or 0
    if start + seq_len > c.max_positions:
        raise GraphError(f"gpt: {start} + {seq_len} positions exceed max_positions="
                         f"{c.max_positions}")
    g = Graph("gpt_prefill" if past_len is None else "gpt_decode", seed)
    ids = g.input("input_ids", (batch, seq_len), "int32")
    d = c.hidden // c.heads
    pasts = [(g.input(f"past.{i}.key", (batch, c.heads, past_len, d)),
              g.input(f"past.{i}.value", (batch, c.heads, past_len, d)))
             for i in range(c.layers)] if past_len else [None] * c.layers
    with g.scope("embed"):
        wte = g.weight("wte", (c.vocab, c.hidden))
        positions = g.constant(np.arange(start, start + seq_len, dtype=np.int32), "positions")
        x = g.apply("add", g.apply("gather", wte, ids),
                    g.apply("gather", g.weight("wpe", (c.max_positions, c.hidden), scale=0.01),
                            positions))
    for i in range(c.layers):
        with g.scope(f"h{i}"):
            x, k, v = gpt_block(g, x, c, pasts[i])
        g.output(f"present.{i}.key", k)
        g.output(f"present.{i}.value", v)
    with g.scope("head"):
        x = layernorm(g, x, "ln_f", c.eps)
        logits = g.apply("matmul", x, g.apply("transpose", wte, perm=(1, 0)), name="lm_head")
    g.output("logits", logits)
    return g


def gpt_prefill(config: GptConfig = GPT2_SMALL, batch: int = 1, seq_len: int = 128,
                seed: int = 0) -> Graph:
    """GPT-2 over a prompt: input_ids [B, S] -> logits [B, S, vocab] and present.{i}.key/value
    [B, heads, S, H/heads] for every layer i."""
    return _gpt(config, batch, seq_len, None, seed)


def gpt_decode(config: GptConfig = GPT2_SMALL, batch: int = 1, past_len: int = 128,
               seed: int = 0) -> Graph:
    """One GPT-2 decode step: input_ids [B, 1] and past.{i}.key/value [B, heads, past_len, D]
    -> logits [B, 1, vocab] and present.{i}.key/value [B, heads, past_len + 1, D]."""
    if past_len < 1:
        raise GraphError(f"gpt_decode: past_len={past_len} must be >= 1 (use gpt_prefill)")
    return _gpt(config, batch, 1, past_len, seed)


# ---- ResNet -----------------------------------------------------------------------------------
RESNET_BLOCKS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
RESIDUAL_SCALE = 0.2  # last convolution of each residual branch, relative to He initialisation


def conv(g: Graph, x: Value, out_channels: int, kernel: int, stride: int, name: str,
         relu: bool = True, gain: float = 1.0) -> Value:
    """kernel x kernel convolution with 'same'-style padding kernel // 2, bias (folded batch
    norm) and an optional relu; He-initialised weights times `gain`."""
    channels = g.type_of(x).shape[1]
    fan_in = channels * kernel * kernel
    w = g.weight(f"{name}.weight", (out_channels, channels, kernel, kernel),
                 scale=gain * math.sqrt(2.0 / fan_in))
    y = g.apply("conv2d", x, w, g.weight(f"{name}.bias", (out_channels,)), stride=stride,
                padding=kernel // 2, name=name)
    return g.apply("relu", y, name=f"{name}.relu") if relu else y


def _block(g: Graph, x: Value, kind: str, planes: int, stride: int) -> Value:
    channels = g.type_of(x).shape[1]
    out_channels = planes * (4 if kind == "bottleneck" else 1)
    if kind == "basic":
        y = conv(g, x, planes, 3, stride, "conv1")
        y = conv(g, y, planes, 3, 1, "conv2", relu=False, gain=RESIDUAL_SCALE)
    else:
        y = conv(g, x, planes, 1, 1, "conv1")
        y = conv(g, y, planes, 3, stride, "conv2")
        y = conv(g, y, out_channels, 1, 1, "conv3", relu=False, gain=RESIDUAL_SCALE)
    shortcut = x
    if stride != 1 or channels != out_channels:
        shortcut = conv(g, x, out_channels, 1, stride, "downsample", relu=False)
    return g.apply("relu", g.apply("add", y, shortcut))


def resnet(depth: int = 50, image_size: int = 224, width: int = 64, num_classes: int = 1000,
           batch: int = 1, seed: int = 0) -> Graph:
    """ResNet-`depth` on images [batch, 3, image_size, image_size] -> logits [batch, classes];
    `width` is the stem's channel count (64 in the paper), stage widths are 1, 2, 4, 8 x it."""
    if depth not in RESNET_BLOCKS:
        raise GraphError(f"resnet depth {depth} must be one of {tuple(RESNET_BLOCKS)}")
    if image_size < 32 or width < 1 or num_classes < 1 or batch < 1:
        raise GraphError(f"resnet: image_size={image_size} must be >= 32, width, classes and "
                         "batch positive")
    kind, counts = RESNET_BLOCKS[depth]
    g = Graph(f"resnet{depth}", seed)
    x = g.input("image", (batch, 3, image_size, image_size))
    with g.scope("stem"):
        x = conv(g, x, width, 7, 2, "conv1")
        x = g.apply("maxpool2d", x, kernel=3, stride=2, padding=1)
    for stage, count in enumerate(counts, start=1):
        for i in range(count):
            with g.scope(f"stage{stage}.block{i}"):
                stride = 2 if stage > 1 and i == 0 else 1
                x = _block(g, x, kind, width * 2 ** (stage - 1), stride)
    with g.scope("head"):
        x = g.apply("global_avgpool", x)
        x = g.apply("reshape", x, shape=(-1, g.type_of(x).shape[1]))
        x = dense(g, x, num_classes, "fc", scale=1.0 / math.sqrt(g.type_of(x).shape[-1]))
    g.output("logits", x)
    return g
