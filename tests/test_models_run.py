"""Whole models through `emulator.model_runner.run_model` and the command line (`ncemu run
MODEL`, `ncemu run FILE.onnx`, `ncemu compile`): numbers against the numpy reference, reports,
tile overrides, several cores, timing-only runs without data, and the error paths.

Tolerance against the reference at fp32: |error| <= 1e-5 x max|reference| (see
tests/graph/test_lowering.py for what differs).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from emulator.cli import main
from emulator.model_runner import (
    ModelReport,
    build_model,
    parse_tile,
    random_inputs,
    run_model,
)
from kernels.graph import GraphError, RandomInit, evaluate
from kernels.graph import models as m

SMALL_BERT = dict(layers=1, hidden=128, heads=2, ffn=256, seq_len=32, vocab=100, batch=2)


def assert_close(outputs: dict, reference: dict) -> None:
    for name, expected in reference.items():
        expected = np.asarray(expected, np.float64)
        np.testing.assert_allclose(np.asarray(outputs[name], np.float64), expected, rtol=0,
                                   atol=1e-5 * np.abs(expected).max(), err_msg=name)


@pytest.fixture(scope="module")
def bert_run():
    graph = m.bert(m.BERT_BASE, **SMALL_BERT)
    stream = io.StringIO()
    result = run_model(graph, machine="inf2.xlarge", progress=stream, seed=4)
    return graph, result, stream.getvalue()


def test_run_model_matches_the_reference_and_reports(bert_run):
    graph, result, progress = bert_run
    assert_close(result.outputs, evaluate(graph, random_inputs(result.graph, 4)))
    report = result.report
    assert isinstance(report, ModelReport)
    assert report.batch == 2 and report.cores == 1 and report.latency_ns > 0
    assert report.latency_per_inference_ns == report.latency_ns / 2
    assert report.economics.throughput_per_s > 0 and report.economics.replicas == 2
    top = report.top()
    assert len(top) == 10
    assert [o.busy_ns for o in top] == sorted((o.busy_ns for o in top), reverse=True)
    assert all(o.span_ns > 0 and o.instructions > 0 for o in report.operators)
    assert sum(o.instructions for o in report.operators) <= report.instructions
    assert set(report.run.cores[0].engines) >= {"tensor", "vector", "scalar", "dma"}
    assert report.hbm_bytes["hbm_read_bytes"] > 0
    assert set(report.wall_s) == {"compile_s", "trace_s", "run_s", "total_s"}
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["schema"] == "ncemu.model_report/1"
    assert len(doc["top_operators"]) == 10 and doc["top_operators"][0]["node"] == top[0].node
    text = report.text()
    assert "top operators" in text and top[0].node in text and "throughput" in text
    # Progress: a line per pass, lines per 10% of nodes lowered, one for the run.
    assert "pass fusion:" in progress and "lower: 100%" in progress and "run: done" in progress


def test_timing_only_runs_make_no_weight_arrays(monkeypatch):
    def refuse(self, name, t):
        raise AssertionError(f"weight {name} materialised in a timing-only run")

    monkeypatch.setattr(RandomInit, "materialize", refuse)
    result = run_model(build_model("resnet18", image_size=32), functional=False)
    assert result.outputs == {}
    assert result.report.latency_ns > 0 and result.report.operators


def test_several_cores_match_one(bert_run):
    graph, single, _ = bert_run
    expected = evaluate(graph, random_inputs(single.graph, 4))
    for partition in ("data", "pipeline"):
        result = run_model(graph, machine="inf2.xlarge", cores=2, partition=partition, seed=4)
        assert_close(result.outputs, expected)
        assert result.report.cores == 2 and len(result.report.run.cores) == 2
        assert result.report.interval_ns <= result.report.latency_ns
    # Two cores default to data parallel; the MLP re-batches to split over them.
    result = run_model(build_model("mlp"), machine="inf2.xlarge", cores=2, batch=4)
    assert result.report.partition == "data" and result.outputs["logits"].shape == (4, 10)


def test_a_layout_override_changes_the_node_time_not_the_results(bert_run):
    graph, base, _ = bert_run
    node = "layer0/intermediate"
    changed = run_model(graph, machine="inf2.xlarge", layouts={node: {"tile_n": 64}}, seed=4)
    before = {o.node: o for o in base.report.operators}[node]
    after = {o.node: o for o in changed.report.operators}[node]
    assert after.instructions > before.instructions and after.busy_ns != before.busy_ns
    np.testing.assert_array_equal(changed.outputs["last_hidden_state"],
                                  base.outputs["last_hidden_state"])


# ---- the command line ----------------------------------------------------------------------
def test_cli_runs_a_model_timing_only_as_json(capsys):
    argv = ["run", "bert-base", "--layers", "1", "--seq", "32", "--batch", "1", "--instance",
            "inf2.xlarge", "--timing-only", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["model"] == "bert_1x768" and doc["batch"] == 1
    assert doc["machine"].startswith("inf2.xlarge") and len(doc["top_operators"]) == 10
    assert "[ncemu] pass lower" in captured.err


def test_cli_tile_override_changes_time_not_results(tmp_path, capsys):
    times, outputs = [], []
    for k, tile in enumerate(([], ["--tile", "fc0/linear:tile_n=64"])):
        out = tmp_path / f"out{k}.npz"
        assert main(["run", "mlp", "--dtype", "fp32", "--json", "--outputs", str(out),
                     *tile]) == 0
        doc = json.loads(capsys.readouterr().out)
        times.append({o["node"]: o["busy_ns"] for o in doc["operators"]}["fc0/linear"])
        with np.load(out) as data:
            outputs.append(data["logits"])
    assert times[0] != times[1]
    # Other tiles group the fp32 additions of each PSUM accumulation differently: fp32 rounding.
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)


def test_cli_compile_dumps_the_fused_graph(capsys):
    assert main(["compile", "mlp", "--dump-after", "fusion"]) == 0
    out = capsys.readouterr().out
    assert " 3. fusion" in out and "--- after fusion" in out
    fused = out.split("--- after fusion")[1].split("lowered mlp")[0]
    assert "linear[activation=relu]" in fused and "= matmul(" not in fused
    assert "fc0/linear" in out.split("lowered mlp")[1]  # the per-node lowering summary
    assert main(["compile", "--list-passes"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("10. lower")
    assert main(["compile", "resnet18", "--image-size", "32", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passes"][-1] == "lower" and doc["lowered"]["instructions"] > 0


@pytest.mark.parametrize("argv, code, message", [
    (["run", "bert-tiny"], 2, "unknown target 'bert-tiny'"),
    (["compile", "bert-tiny"], 2, "unknown model 'bert-tiny'"),
    (["run", "mlp", "--tile", "fc0/linear"], 2, "tile 'fc0/linear' must be NODE:KEY=VALUE"),
    (["run", "mlp", "--tile", "fc0/linear:tile_n=wide"], 2, "value 'wide' must be an int"),
    (["run", "mlp", "--timing-only", "--tile", "fc9/linear:tile_n=64"], 1,
     "node fc9/linear: no such node"),
    (["run", "mlp", "--timing-only", "--tile", "fc0/linear:tile_q=64"], 1,
     "has no tile parameter(s) tile_q"),
    (["run", "mlp", "--seq", "64"], 1, "model mlp takes no seq"),
    (["run", "softmax", "--layers", "2"], 2, "--layers only apply to a model"),
    (["run", "missing.onnx"], 2, "no such ONNX file missing.onnx"),
    (["run", "mlp", "--cores", "3", "--timing-only"], 1, "cores=3 exceeds the 2 NeuronCores"),
    (["run", "softmax", "--tensor-parallel", "2"], 2, "--tensor-parallel only apply to a model"),
    (["run", "bert-base", "--layers", "1", "--seq", "16", "--tensor-parallel", "2", "--cores",
      "2", "--timing-only"], 1, "does not combine with cores or partition (--cores, --partition)"),
    (["run", "bert-base", "--layers", "1", "--seq", "16", "--tensor-parallel", "5",
      "--machine", "inf2.48xlarge", "--timing-only"], 1, "(768, 768) weight does not divide by 5"),
    (["run", "bert-base", "--layers", "1", "--seq", "16", "--tensor-parallel", "0",
      "--timing-only"], 1, "tensor_parallel=0 must be a positive int"),
    (["run", "bert-base", "--layers", "1", "--seq", "16", "--tensor-parallel", "4",
      "--timing-only"], 1, "tensor_parallel=4 exceeds the 2 NeuronCores of inf2.xlarge"),
])
def test_cli_errors_name_the_value(argv, code, message, capsys):
    assert main(argv) == code
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("packed, ranks", [(False, [0, 2]), (True, [0, 1])])
def test_cli_tensor_parallel_reports_the_all_reduces_of_its_ranks(packed, ranks, capsys):
    # inf2.24xlarge: 6 chips of 2 cores.  One rank per chip puts ranks on cores 0 and 2 (the
    # all-reduce crosses NeuronLink); --packed puts them on the two cores of chip 0.
    argv = ["run", "bert-base", "--layers", "1", "--seq", "16", "--tensor-parallel", "2",
            "--machine", "inf2.24xlarge", "--timing-only", "--json"]
    assert main(argv + (["--packed"] if packed else [])) == 0
    doc = json.loads(capsys.readouterr().out)
    collectives = doc["collectives"]
    assert collectives["ranks"] == ranks
    assert collectives["count"] == 2  # one all-reduce after attention, one after the FFN
    assert (collectives["link_bytes"] > 0) is not packed  # same-chip ranks use device memory
    assert main(argv[:-1] + (["--packed"] if packed else [])) == 0  # the text report
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0].strip() for line in lines
            if line.startswith("    core ")] == [f"core {rank}" for rank in ranks]


def test_cli_rejects_an_unknown_pass(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compile", "mlp", "--dump-after", "fuse"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fuse'" in capsys.readouterr().err


def test_builder_table_and_tile_syntax():
    assert build_model("gpt2", layers=1, seq=8).name == "gpt_prefill"
    with pytest.raises(GraphError, match=r"unknown model 'bert'; models: mlp, bert-base"):
        build_model("bert")
    assert parse_tile("stage1.block0/conv1:tile_n=256") == ("stage1.block0/conv1", "tile_n", 256)
    with pytest.raises(ValueError, match=r"tile ':tile_n=2' must be NODE:KEY=VALUE"):
        parse_tile(":tile_n=2")


# ---- ONNX ----------------------------------------------------------------------------------
def onnx_model(onnx):
    """Conv, Relu, Reshape, Transpose, MatMul, Add, Relu, LayerNormalization, Softmax."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(8)

    def f(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["X", "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Reshape", ["relu", "shape"], ["rows"]),
        helper.make_node("Transpose", ["rows"], ["tokens"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["tokens", "W2"], ["proj"]),
        helper.make_node("Add", ["proj", "b2"], ["biased"]),
        helper.make_node("Relu", ["biased"], ["hidden"]),
        helper.make_node("LayerNormalization", ["hidden", "gamma", "beta"], ["normed"],
                         epsilon=1e-5),
        helper.make_node("Softmax", ["normed"], ["Y"], axis=-1),
    ]
    inits = {"W": f(4, 3, 3, 3), "B": f(4), "shape": np.array([2, 4, 64], np.int64),
             "W2": f(4, 16), "b2": f(16), "gamma": f(16), "beta": f(16)}
    graph = helper.make_graph(
        nodes, "onnx_net", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 64, 16])],
        [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model, {"X": f(2, 3, 8, 8)}


def test_an_onnx_model_runs_end_to_end(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from kernels.graph import load_onnx

    model, feed = onnx_model(onnx)
    path = tmp_path / "net.onnx"
    onnx.save(model, str(path))
    (expected,) = ReferenceEvaluator(model).run(None, feed)
    result = run_model(load_onnx(str(path)), feed)
    np.testing.assert_allclose(result.outputs["Y"], expected, rtol=1e-4, atol=1e-5)
    assert {"conv2d", "linear", "layernorm", "softmax"} <= {o.op for o in
                                                             result.report.operators}
    inputs, outputs = tmp_path / "x.npz", tmp_path / "y.npz"
    np.savez(inputs, **feed)
    assert main(["run", str(path), "--inputs", str(inputs), "--dtype", "fp32", "--outputs",
                 str(outputs)]) == 0
    out = capsys.readouterr().out
    assert "model onnx_net" in out and "numerics Y:" in out and "PASS" in out
    with np.load(outputs) as data:
        np.testing.assert_allclose(data["Y"], expected, rtol=1e-4, atol=1e-5)
    assert main(["run", str(path), "--timing-only", "--layers", "2"]) == 1
    assert "an ONNX model takes no layers" in capsys.readouterr().err
