"""Plain numpy forward passes written directly from the papers' equations, independent of
kernels.graph (they share only the weights, read by name from a built graph).

Convolution and pooling loop over kernel offsets (not the im2col of the op table), GELU uses
math.erf, attention builds its causal mask by loops over positions; everything runs in float64
so the graph's fp32 results are compared with a more exact value.
"""

from __future__ import annotations

import math

import numpy as np

_ERF = np.vectorize(math.erf, otypes=[np.float64])


def weights(graph) -> dict[str, np.ndarray]:
    return {n: graph.constant_value(n).astype(np.float64) for n in graph.constants()}


def gelu(x: np.ndarray) -> np.ndarray:
    return x * 0.5 * (1.0 + _ERF(x / math.sqrt(2.0)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention(q, k, v, mask=None, causal=False, scale=None):
    """q [B, H, Sq, D], k/v [B, H, Sk, D]: softmax(q k^T * scale + mask) v."""
    sq, sk = q.shape[-2], k.shape[-2]
    scores = np.einsum("bhqd,bhkd->bhqk", q, k) * (scale or 1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        scores = scores + mask
    if causal:
        for i in range(sq):  # query i is position sk - sq + i and sees keys up to it
            scores[..., i, sk - sq + i + 1:] = -np.inf
    return np.einsum("bhqk,bhkd->bhqd", softmax(scores), v)


def conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Direct convolution: a sum over kernel offsets of strided input slices."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    top, left, bottom, right = padding
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    ho = (h + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    og = o // groups
    out = np.zeros((n, o, ho, wo))
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dilation[0], j * dilation[1]
                patch = xp[:, g * cg:(g + 1) * cg,
                           r0:r0 + stride[0] * (ho - 1) + 1:stride[0],
                           c0:c0 + stride[1] * (wo - 1) + 1:stride[1]]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch,
                                                         w[g * og:(g + 1) * og, :, i, j])
    return out if b is None else out + b.reshape(1, -1, 1, 1)


def pool2d(x, kernel, stride, padding, kind, count_include_pad=False):
    """Max or average pooling by a loop over kernel offsets."""
    n, c, h, w = x.shape
    top, left, bottom, right = padding
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    real = np.pad(np.ones((h, w)), ((top, bottom), (left, right)))
    ho = (h + top + bottom - kernel[0]) // stride[0] + 1
    wo = (w + left + right - kernel[1]) // stride[1] + 1
    acc = np.full((n, c, ho, wo), fill)
    count = np.zeros((ho, wo))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows = slice(i, i + stride[0] * (ho - 1) + 1, stride[0])
            cols = slice(j, j + stride[1] * (wo - 1) + 1, stride[1])
            acc = np.maximum(acc, xp[:, :, rows, cols]) if kind == "max" else \
                acc + xp[:, :, rows, cols]
            count += real[rows, cols]
    if kind == "max":
        return acc
    return acc / (kernel[0] * kernel[1] if count_include_pad else count)


# ---- models -----------------------------------------------------------------------------------
def mlp(w, x, layers: int, activation=lambda h: np.maximum(h, 0.0)):
    h = x.astype(np.float64)
    for i in range(layers):
        h = h @ w[f"fc{i}/linear.weight"] + w[f"fc{i}/linear.bias"]
        if i < layers - 1:
            h = activation(h)
    return h


def _split_heads(x, heads):
    b, s, hidden = x.shape
    return x.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)


def _merge_heads(x):
    b, h, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def bert(w, cfg, ids, token_types, mask):
    s = ids.shape[1]
    x = (w["embeddings/word"][ids] + w["embeddings/position"][np.arange(s)]
         + w["embeddings/token_type"][token_types])
    x = layernorm(x, w["embeddings/ln.gamma"], w["embeddings/ln.beta"], cfg.eps)
    additive = ((1.0 - mask) * -10000.0)[:, None, None, :]

    def dense(name, h):
        return h @ w[f"{name}.weight"] + w[f"{name}.bias"]

    for i in range(cfg.layers):
        p = f"layer{i}/"
        q, k, v = (_split_heads(dense(p + f"attention.{n}", x), cfg.heads)
                   for n in ("query", "key", "value"))
        a = dense(p + "attention.output", _merge_heads(attention(q, k, v, additive)))
        x = layernorm(a + x, w[p + "attention.ln.gamma"], w[p + "attention.ln.beta"], cfg.eps)
        h = dense(p + "output", gelu(dense(p + "intermediate", x)))
        x = layernorm(h + x, w[p + "output.ln.gamma"], w[p + "output.ln.beta"], cfg.eps)
    return x


def gpt(w, cfg, ids, past=None):
    """GPT-2 logits and per-layer (key, value) caches; `past` is a list of (key, value)."""
    s = ids.shape[1]
    start = 0 if past is None else past[0][0].shape[2]
    x = w["embed/wte"][ids] + w["embed/wpe"][start + np.arange(s)]

    def dense(name, h):
        return h @ w[f"{name}.weight"] + w[f"{name}.bias"]

    presents = []
    for i in range(cfg.layers):
        p = f"h{i}/"
        a = layernorm(x, w[p + "ln_1.gamma"], w[p + "ln_1.beta"], cfg.eps)
        qkv = dense(p + "attn.c_attn", a)
        q, k, v = (_split_heads(t, cfg.heads) for t in np.split(qkv, 3, axis=-1))
        if past is not None:
            k = np.concatenate([past[i][0], k], axis=2)
            v = np.concatenate([past[i][1], v], axis=2)
        presents.append((k, v))
        x = x + dense(p + "attn.c_proj", _merge_heads(attention(q, k, v, causal=True)))
        m = layernorm(x, w[p + "ln_2.gamma"], w[p + "ln_2.beta"], cfg.eps)
        x = x + dense(p + "mlp.c_proj", gelu_tanh(dense(p + "mlp.c_fc", m)))
    x = layernorm(x, w["head/ln_f.gamma"], w["head/ln_f.beta"], cfg.eps)
    return x @ w["embed/wte"].T, presents


def resnet(w, blocks: list[tuple[str, str, int]], x):
    """`blocks`: (scope, kind, stride) of every residual block, in order."""
    def conv(name, h, stride, relu=True):
        weight = w[f"{name}.weight"]
        pad = weight.shape[-1] // 2
        y = conv2d(h, weight, w[f"{name}.bias"], (stride, stride), (pad,) * 4)
        return np.maximum(y, 0.0) if relu else y

    h = conv("stem/conv1", x.astype(np.float64), 2)
    h = pool2d(h, (3, 3), (2, 2), (1, 1, 1, 1), "max")
    for scope, kind, stride in blocks:
        p = scope + "/"
        if kind == "basic":
            y = conv(p + "conv2", conv(p + "conv1", h, stride), 1, relu=False)
        else:
            y = conv(p + "conv3", conv(p + "conv2", conv(p + "conv1", h, 1), stride), 1,
                     relu=False)
        shortcut = conv(p + "downsample", h, stride, relu=False) \
            if p + "downsample.weight" in w else h
        h = np.maximum(y + shortcut, 0.0)
    h = h.mean(axis=(2, 3))
    return h @ w["head/fc.weight"] + w["head/fc.bias"]
