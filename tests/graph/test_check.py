"""The IR check catches deliberately broken graphs, naming the node and what is wrong.

Graphs built through `Graph` are consistent by construction, so each test breaks one the way a
buggy pass or a hand edit through networkx would.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from isa.dtypes import DType, dtype
from isa.target import INF1
from kernels.graph import Graph, GraphError, Operator, TensorType, Value, check
from kernels.graph.layout import GemmTiles, Layout, RowTiles


def mlp() -> Graph:
    g = Graph("mlp")
    x = g.input("x", (4, 16))
    h = g.apply("matmul", x, g.weight("w", (16, 8)), name="mm")
    h = g.apply("add", h, g.weight("b", (8,)), name="bias")
    g.output("y", g.apply("softmax", g.apply("relu", h, name="act"), name="sm"))
    return g


def test_a_well_formed_graph_passes_on_every_target():
    g = mlp()
    check(g)
    check(g, INF1)
    check(g, "trn1")


def test_shape_mismatch_in_a_recorded_type():
    g = mlp()
    g.retype("mm", (TensorType((4, 9), "fp32"),))
    with pytest.raises(GraphError, match=r"node mm: \(matmul\) shape mismatch: output 0 is "
                                         r"recorded as fp32\[4,9\] but inference .* gives "
                                         r"fp32\[4,8\]"):
        check(g)


def test_shape_mismatch_after_an_input_changes():
    g = mlp().with_input("x", (4, 12))
    with pytest.raises(GraphError, match=r"node mm: \(matmul\) matmul: contraction mismatch"):
        check(g)


def test_unknown_operator():
    g = mlp()
    record = Operator("relu")
    object.__setattr__(record, "op", "frobnicate")
    g.nx.nodes["act"]["op"] = record
    with pytest.raises(GraphError, match="node act: unknown operator 'frobnicate'"):
        check(g)
    g.nx.nodes["act"]["op"] = "relu"
    with pytest.raises(GraphError, match="node act: holds 'relu', not an operator record"):
        check(g)


def test_attributes_not_in_normal_form_or_out_of_range():
    g = mlp()
    record = Operator("softmax")
    object.__setattr__(record, "attrs", ())
    g.nx.nodes["sm"]["op"] = record
    with pytest.raises(GraphError, match=r"node sm: \(softmax\) attributes \(\) are not in "
                                         "normal form"):
        check(g)
    object.__setattr__(record, "attrs", (("axis", 7),))
    with pytest.raises(GraphError, match=r"node sm: \(softmax\) softmax axis 7 is out of range"):
        check(g)


def test_dtype_clash():
    g = mlp().with_input("x", (4, 16), "bf16")
    with pytest.raises(GraphError, match=r"node mm: \(matmul\) matmul: dtype clash between "
                                         r"inputs bf16\[4,16\], fp32\[16,8\]"):
        check(g)


def test_dtype_mismatch_in_a_recorded_type():
    g = mlp()
    g.retype("act", (TensorType((4, 8), "bf16"),))
    with pytest.raises(GraphError, match=r"node act: \(relu\) dtype mismatch"):
        check(g)


def test_unknown_dtype():
    g = mlp()
    fake = DType("fp64", "float64", True)
    t = TensorType((4, 8), "fp32")
    object.__setattr__(t, "dtype", fake)
    g.nx.nodes["act"]["types"] = (t,)
    with pytest.raises(GraphError, match="node act: .* not a known dtype"):
        check(g)


def test_cycle():
    g = mlp()
    g.nx.add_edge("act", "bias", key=2, port=0, type=g.types("act")[0])
    with pytest.raises(GraphError, match="is on a cycle: .*act.*bias|is on a cycle: .*bias.*act"):
        check(g)


def test_missing_and_doubled_inputs():
    g = mlp()
    g.nx.remove_edge("mm", "bias", key=0)
    with pytest.raises(GraphError, match=r"node bias: \(add\) input slots \[1\] are not 0..0"):
        check(g)
    g = mlp()
    g.nx.remove_edge("act", "sm", key=0)
    g.nx.add_edge("bias", "sm", key=1, port=0, type=g.types("bias")[0])
    with pytest.raises(GraphError, match=r"node sm: \(softmax\) input slots \[1\]"):
        check(g)


def test_edge_that_disagrees_with_its_producer():
    g = mlp()
    g.nx.edges["bias", "act", 0]["type"] = TensorType((4, 8), "bf16")
    with pytest.raises(GraphError, match=r"node act: \(relu\) input 0 edge from bias carries "
                                         r"bf16\[4,8\] but bias produces fp32\[4,8\]"):
        check(g)
    g = mlp()
    g.nx.edges["bias", "act", 0]["port"] = 1
    with pytest.raises(GraphError, match="reads output 1 of bias, which has 1 outputs"):
        check(g)


def test_constant_value_of_the_wrong_shape():
    g = mlp()
    g.add_constant("table", np.zeros((2, 2)), g.types("b")[0].dtype)
    g.nx.nodes["table"]["types"] = (TensorType((3,), "fp32"),)
    g.nx.nodes["table"]["op"] = Operator("constant", {"shape": (3,)})
    with pytest.raises(GraphError, match=r"node table: \(constant\) holds a value of shape "
                                         r"\(2, 2\), typed fp32\[3\]"):
        check(g)


def test_sources_and_output_counts_are_checked():
    g = mlp()
    g.nx.nodes["act"]["types"] = [TensorType((4, 8), "fp32")]
    with pytest.raises(GraphError, match=r"node act: \(relu\) output types .* are not a tuple"):
        check(g)
    g = mlp()
    g.nx.nodes["act"]["types"] = g.types("act") * 2
    with pytest.raises(GraphError, match=r"node act: \(relu\) records 2 outputs, the op has 1"):
        check(g)
    g = mlp()
    g.nx.add_edge("x", "w", key=0, port=0, type=g.types("x")[0])
    with pytest.raises(GraphError, match=r"node w: \(constant\) constant takes 0 inputs"):
        check(g)
    g = mlp()
    g.add_constant("ids", np.zeros(3, np.int32), dtype("int32"))
    g.nx.nodes["ids"]["types"] = (TensorType((3,), "fp32"),)
    with pytest.raises(GraphError, match=r"node ids: \(constant\) holds int32 values, typed"):
        check(g)
    g = mlp()
    g.annotate("mm", "layout", "big tiles")
    with pytest.raises(GraphError, match="layout annotation 'big tiles' is not a Layout"):
        check(g)


def test_outputs_must_exist():
    g = mlp()
    g.outputs["z"] = Value("sm", 1)
    with pytest.raises(GraphError, match="output 'z' refers to sm:1, which does not exist"):
        check(g)
    empty = Graph("empty")
    empty.input("x", (1,))
    with pytest.raises(GraphError, match="has no outputs"):
        check(empty)


def test_target_legality_dims_must_be_positive():
    g = Graph()
    x = g.input("x", (0, 4))
    g.output("y", g.apply("relu", x))
    with pytest.raises(GraphError, match=r"node x: \(input\) output 0 fp32\[0,4\] has a "
                                         "dimension < 1; tensors on inf2 must be non-empty"):
        check(g)


def test_target_legality_of_layout_annotations():
    g = mlp()
    g.annotate("mm", "layout", Layout(GemmTiles(4, 256, 8), "user"))
    with pytest.raises(GraphError, match=r"node mm: \(matmul\) layout gemm\(m=4,k=256,n=8,"
                                         r"bufs=2\) by user is illegal on inf2: tile_k=256 "
                                         "exceeds matmul_max_k=128"):
        check(g)
    g = mlp()
    g.annotate("sm", "layout", Layout(RowTiles(4, 4), "user"))
    with pytest.raises(GraphError, match="tile_free must be the whole row"):
        check(g)
    g = mlp()
    g.annotate("mm", "layout", Layout(RowTiles(4, 4), "user"))
    with pytest.raises(GraphError, match="is not a GemmTiles"):
        check(g)
    g.annotate("mm", "layout", replace(Layout(GemmTiles(4, 16, 8), "rule")))
    check(g)
    g.annotate("x", "layout", Layout(GemmTiles(4, 16, 8), "rule"))
    with pytest.raises(GraphError, match="input has no tiles"):
        check(g)
