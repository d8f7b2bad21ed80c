"""The compiler driver: pass list, IR check between passes, dumps, options and lowering slot."""

from __future__ import annotations

import io
import json

import pytest

from isa.target import INF1, INF2
from kernels.graph import CompileOptions, Graph, GraphError, compile, format_passes, passes
from kernels.graph import compiler as compiler_module
from kernels.graph import models as m
from kernels.graph.compiler import Pass, run_pass
from kernels.graph.tensor import TensorType

PASS_NAMES = ["infer", "fold_constants", "fusion", "prune", "precision", "layout", "budget",
              "partition", "hbm_placement", "lower"]


def small() -> Graph:
    return m.mlp((16, 32, 8), batch=4)


def test_pass_list_and_its_printout():
    assert passes() == PASS_NAMES
    lines = format_passes().splitlines()
    assert len(lines) == len(PASS_NAMES)
    assert lines[0].startswith(" 1. infer") and lines[-1].startswith("10. lower")


def test_compile_runs_every_pass_and_leaves_its_input_alone():
    g = small()
    before = g.format()
    out = compile(g, "inf2")
    assert out.meta["passes"] == tuple(PASS_NAMES)
    assert g.format() == before and "passes" not in g.meta
    assert "lowered" not in out.meta  # no lowering given: the slot is skipped
    assert {out.op(n).op for n in out.nodes} == {"input", "constant", "linear"}
    assert all("layout" in out.annotations(n) and "working_set" in out.annotations(n)
               for n in out.nodes if out.op(n).op == "linear")
    assert all("hbm" in out.annotations(n) for n in out.nodes)


def test_lowering_callable_gets_the_annotated_graph_and_the_target():
    calls = []

    def lowering(graph, target):
        calls.append((graph.meta["hbm"], target))
        return "program"

    out = compile(small(), INF1, lowering=lowering)
    assert out.meta["lowered"] == "program"
    assert calls[0][1] is INF1 and calls[0][0].weights_bytes > 0


def test_dump_after_writes_text_or_json():
    text = io.StringIO()
    compile(small(), "inf2", dump_after="fusion", dump=text)
    dumped = text.getvalue()
    assert dumped.startswith("--- after fusion\ngraph mlp:")
    assert "linear[activation=relu]" in dumped and "layout" not in dumped
    as_json = io.StringIO()
    compile(small(), "inf2", dump_after=["prune", "hbm_placement"], dump_format="json",
            dump=as_json)
    sections = as_json.getvalue().split("--- after ")[1:]
    assert [s.split("\n", 1)[0] for s in sections] == ["prune", "hbm_placement"]
    assert "hbm" in json.loads(sections[1].split("\n", 1)[1])["meta"]
    everything = io.StringIO()
    compile(small(), "inf2", dump_after="all", dump=everything)
    assert everything.getvalue().count("--- after ") == len(PASS_NAMES)


def test_stop_after_ends_the_pipeline():
    out = compile(small(), "inf2", stop_after="fusion")
    assert out.meta["passes"] == ("infer", "fold_constants", "fusion")
    assert "hbm" not in out.meta


@pytest.mark.parametrize("kwargs, message", [
    ({"dump_after": "fuse"}, r"dump_after: unknown pass\(es\) fuse; passes: infer, "),
    ({"stop_after": ["layout", "nope"]}, "stop_after: unknown pass"),
    ({"dump_format": "yaml"}, "dump_format"),
    ({"cores": 0}, "cores=0 must be a positive int"),
    ({"partition": "tensor", "cores": 2}, "partition='tensor' must be one of"),
    ({"partition": "data"}, "needs cores >= 2"),
    ({"precision": "int8"}, "must be a float dtype"),
    ({"options": CompileOptions(), "cores": 2}, "not both"),
])
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(GraphError, match=message):
        compile(small(), "inf2", **kwargs)


def test_the_input_graph_is_checked_first():
    g = small()
    g.retype("fc0/linear", (TensorType((4, 31), "fp32"),))
    with pytest.raises(GraphError, match=r"^input graph: node fc0/linear: \(matmul\) shape "
                                         "mismatch"):
        compile(g, "inf2")


def test_the_ir_check_runs_after_every_pass(monkeypatch):
    def corrupt(graph, ctx):
        graph = graph.copy()
        graph.retype("fc1/linear", (TensorType((4, 9), "fp32"),))
        return graph

    broken = (*compiler_module.PASSES[:3], Pass("corrupt", corrupt, "a buggy pass"),
              *compiler_module.PASSES[3:])
    monkeypatch.setattr(compiler_module, "PASSES", broken)
    with pytest.raises(GraphError, match=r"^after pass corrupt: node fc1/linear: \(linear\) shape "
                                         "mismatch"):
        compile(small(), "inf2")
    with pytest.raises(GraphError) as err:
        compile(small(), "inf2")
    assert err.value.node == "fc1/linear"


def test_run_pass_runs_one_pass_and_checks():
    out = run_pass("fusion", small())
    assert out.meta["fusions"] == {"linear": 2}
    with pytest.raises(GraphError, match="unknown pass"):
        run_pass("inline", small())


def test_full_size_bert_base_compiles_with_a_pipeline_over_two_cores():
    g = compile(m.bert(m.BERT_BASE), INF2, cores=2, partition="pipeline", precision="bf16")
    plan, hbm = g.meta["partition"], g.meta["hbm"]
    assert abs(plan.stage_flops[0] - plan.stage_flops[1]) < 0.1 * sum(plan.stage_flops)
    # bf16 weights; folding kept only the 128 position rows used of 512; 64-byte alignment
    weights = 2 * (108_891_648 - (512 - 128) * 768)
    assert weights <= hbm.weights_bytes <= weights + 64 * len(g.constants())
    assert hbm.activation_peak_bytes < 20 * 2 ** 20
