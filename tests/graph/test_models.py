"""Model builders against independent numpy forward passes (tests/graph/numpy_nets.py) that share
only the weights, in fp32 and under the bf16 policy; full-size models are built, not evaluated.

Tolerances (measured margins are several times smaller): fp32 policy rtol 1e-4 with atol 1e-4 x
the reference's largest magnitude (fp32 accumulation-order differences against float64); bf16
policy against the float64 reference: |error| <= 2e-2 x max|reference| + 2e-2 x |reference|, the
rounding of every stored tensor to 8 significant bits compounding over the layers.
"""

from __future__ import annotations

import time
from math import prod

import numpy as np
import pytest

from kernels.graph import RandomInit, compile, evaluate
from kernels.graph import models as m
from tests.graph import numpy_nets as nn

RNG = np.random.default_rng(11)


def assert_fp32(actual, expected):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=1e-4,
                               atol=1e-4 * scale)


def assert_bf16(actual, expected):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=2e-2,
                               atol=2e-2 * scale)


def params(graph) -> int:
    """Number of random-initialised weights (not the builders' array constants)."""
    return sum(prod(graph.types(n)[0].shape) for n in graph.constants()
               if isinstance(graph.constant_source(n), RandomInit))


# ---- MLP --------------------------------------------------------------------------------------
def test_mlp_matches_numpy_fp32_and_bf16():
    g = m.mlp((32, 64, 48, 10), batch=6, seed=3)
    x = RNG.standard_normal((6, 32)).astype(np.float32)
    expected = nn.mlp(nn.weights(g), x, layers=3)
    assert_fp32(evaluate(g, {"x": x})["logits"], expected)
    assert_bf16(evaluate(g, {"x": x}, "bf16")["logits"], expected)


def test_mlp_rejects_a_single_width():
    with pytest.raises(ValueError, match="two or more"):
        m.mlp((8,))


# ---- BERT -------------------------------------------------------------------------------------
SMALL_BERT = m.BertConfig(layers=2, hidden=64, heads=4, ffn=128, seq_len=16, batch=2, vocab=100,
                          max_positions=32)


def bert_inputs(c):
    ids = RNG.integers(0, c.vocab, (c.batch, c.seq_len)).astype(np.int32)
    types = RNG.integers(0, c.type_vocab, (c.batch, c.seq_len)).astype(np.int32)
    mask = np.ones((c.batch, c.seq_len), np.float32)
    mask[1, c.seq_len - 5:] = 0.0  # padding at the end of the second sequence
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def test_bert_encoder_matches_numpy():
    g = m.bert(SMALL_BERT, seed=1)
    feed = bert_inputs(SMALL_BERT)
    expected = nn.bert(nn.weights(g), SMALL_BERT, feed["input_ids"], feed["token_type_ids"],
                       feed["attention_mask"])
    assert_fp32(evaluate(g, feed)["last_hidden_state"], expected)
    assert_bf16(evaluate(g, feed, "bf16")["last_hidden_state"], expected)


def test_compiled_bert_matches_numpy():
    built = m.bert(SMALL_BERT, seed=1)
    g = compile(built, "inf2")
    # six dense layers per encoder layer; two residual LNs per layer and the embeddings' LN
    assert g.meta["fusions"] == {"linear": 6 * SMALL_BERT.layers,
                                 "add_layernorm": 2 * SMALL_BERT.layers + 1}
    feed = bert_inputs(SMALL_BERT)
    expected = nn.bert(nn.weights(built), SMALL_BERT, feed["input_ids"],
                       feed["token_type_ids"], feed["attention_mask"])
    assert_fp32(evaluate(g, feed)["last_hidden_state"], expected)


def test_bert_config_overrides_and_validation():
    g = m.bert(m.BERT_BASE, layers=1, seq_len=8)
    assert g.graph_inputs["input_ids"].shape == (1, 8)
    with pytest.raises(ValueError, match="divide by heads"):
        m.BertConfig(hidden=100, heads=12)
    with pytest.raises(ValueError, match="max_positions"):
        m.BertConfig(seq_len=1024)
    with pytest.raises(ValueError, match="BertConfig.layers=0 must be a positive int"):
        m.BertConfig(layers=0)


def test_full_size_bert_builds_fast_with_the_published_sizes():
    start = time.perf_counter()
    base, large = m.bert(m.BERT_BASE), m.bert(m.BERT_LARGE)
    assert time.perf_counter() - start < 3.0
    # parameters without the pooler: 108,891,648 (base) and 334,092,288 (large)
    assert params(base) == 108_891_648
    assert params(large) == 334_092_288
    assert large.types("layer23/output")[0].shape == (1, 128, 1024)
    assert base.total_flops() == pytest.approx(22.4e9, rel=0.01)


# ---- GPT-2 ------------------------------------------------------------------------------------
SMALL_GPT = m.GptConfig(layers=2, hidden=64, heads=4, vocab=97, max_positions=32)


def test_gpt_prefill_matches_numpy():
    g = m.gpt_prefill(SMALL_GPT, batch=2, seq_len=8, seed=5)
    ids = RNG.integers(0, SMALL_GPT.vocab, (2, 8)).astype(np.int32)
    logits, presents = nn.gpt(nn.weights(g), SMALL_GPT, ids)
    out = evaluate(g, {"input_ids": ids})
    assert_fp32(out["logits"], logits)
    for i, (k, v) in enumerate(presents):
        assert_fp32(out[f"present.{i}.key"], k)
        assert_fp32(out[f"present.{i}.value"], v)
    assert_bf16(evaluate(g, {"input_ids": ids}, "bf16")["logits"], logits)


def test_gpt_decode_step_with_kv_cache_matches_numpy_and_a_longer_prefill():
    ids = RNG.integers(0, SMALL_GPT.vocab, (2, 9)).astype(np.int32)
    prefill = m.gpt_prefill(SMALL_GPT, batch=2, seq_len=8, seed=5)
    cache = evaluate(prefill, {"input_ids": ids[:, :8]})
    decode = m.gpt_decode(SMALL_GPT, batch=2, past_len=8, seed=5)
    feed = {"input_ids": ids[:, 8:]}
    for i in range(SMALL_GPT.layers):
        feed[f"past.{i}.key"] = cache[f"present.{i}.key"]
        feed[f"past.{i}.value"] = cache[f"present.{i}.value"]
    out = evaluate(decode, feed)
    past = [(feed[f"past.{i}.key"].astype(np.float64), feed[f"past.{i}.value"].astype(np.float64))
            for i in range(SMALL_GPT.layers)]
    logits, presents = nn.gpt(nn.weights(decode), SMALL_GPT, ids[:, 8:], past)
    assert_fp32(out["logits"], logits)
    assert out["present.0.key"].shape == (2, 4, 9, 16)
    assert_fp32(out["present.1.value"], presents[1][1])
    longer = evaluate(m.gpt_prefill(SMALL_GPT, batch=2, seq_len=9, seed=5), {"input_ids": ids})
    assert_fp32(out["logits"][:, 0], longer["logits"][:, 8].astype(np.float64))


def test_gpt_block_graph_and_full_size_gpt2():
    block = m.gpt_block_graph(SMALL_GPT, batch=1, seq_len=4)
    assert block.types(block.outputs["y"].node)[0].shape == (1, 4, 64)
    assert params(m.gpt_prefill()) == 124_439_808  # GPT-2 small, tied LM head
    with pytest.raises(ValueError, match="max_positions"):
        m.gpt_decode(SMALL_GPT, past_len=32)
    with pytest.raises(ValueError, match="past_len=0 must be >= 1"):
        m.gpt_decode(SMALL_GPT, past_len=0)
    with pytest.raises(ValueError, match="must divide by heads"):
        m.GptConfig(hidden=10, heads=3)


# ---- ResNet -----------------------------------------------------------------------------------
def resnet_blocks(depth):
    kind, counts = m.RESNET_BLOCKS[depth]
    return [(f"stage{s}.block{i}", kind, 2 if s > 1 and i == 0 else 1)
            for s, count in enumerate(counts, start=1) for i in range(count)]


@pytest.mark.parametrize("depth, width, batch", [(18, 8, 2), (50, 4, 1)])
def test_resnet_matches_numpy(depth, width, batch):
    g = m.resnet(depth, image_size=32, width=width, num_classes=10, batch=batch, seed=2)
    image = RNG.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    expected = nn.resnet(nn.weights(g), resnet_blocks(depth), image)
    assert_fp32(evaluate(g, {"image": image})["logits"], expected)
    assert_bf16(evaluate(g, {"image": image}, "bf16")["logits"], expected)


def test_full_size_resnets_build_fast_with_torchvision_sizes():
    start = time.perf_counter()
    r50, r18 = m.resnet(50), m.resnet(18)
    assert time.perf_counter() - start < 3.0
    # torchvision's counts minus one parameter per batch-norm channel (folded into a bias)
    assert params(r50) == 25_557_032 - 26_560
    assert params(r18) == 11_689_512 - 4_800
    assert r50.total_flops() == pytest.approx(8.2e9, rel=0.02)  # ~4.1 GMACs at 224x224
    assert r50.types(r50.outputs["logits"].node)[0].shape == (1, 1000)


def test_resnet_validation():
    with pytest.raises(ValueError, match="depth 20"):
        m.resnet(20)
    with pytest.raises(ValueError, match="image_size"):
        m.resnet(18, image_size=16)
