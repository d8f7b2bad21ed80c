"""The graph IR: building, naming, types, lazy weights, editing, printing and JSON dumps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kernels.graph import Graph, GraphError, RandomInit, TensorType, Value, compile
from kernels.graph.ops import Operator


def small_graph() -> Graph:
    g = Graph("small", seed=4)
    x = g.input("x", (2, 8))
    with g.scope("fc"):
        h = g.apply("matmul", x, g.weight("w", (8, 4)))
        h = g.apply("relu", g.apply("add", h, g.weight("b", (4,))))
    a, b = g.apply("split", h, axis=1, sizes=(1, 3))
    g.output("y", g.apply("concat", b, a, axis=1))
    return g


def test_building_names_layers_and_types():
    g = small_graph()
    assert g.nodes == ["x", "fc/w", "fc/matmul", "fc/b", "fc/add", "fc/relu", "split", "concat"]
    assert g.layer("fc/relu") == "fc" and g.layer("split") is None
    assert g.types("split") == (TensorType((2, 1), "fp32"), TensorType((2, 3), "fp32"))
    assert g.inputs("concat") == (Value("split", 1), Value("split", 0))
    assert g.consumers(Value("fc/matmul")) == [("fc/add", 0)]
    assert g.graph_inputs == {"x": TensorType((2, 8), "fp32")}
    assert g.constants() == ["fc/w", "fc/b"]
    again = g.apply("relu", g.outputs["y"])
    assert again.node == "relu"
    assert g.apply("relu", g.outputs["y"]).node == "relu_1"


def test_building_errors_name_the_node():
    g = small_graph()
    with pytest.raises(GraphError, match=r"node mm: \(matmul\) matmul: contraction mismatch"):
        g.apply("matmul", Value("x"), g.weight("w2", (3, 3)), name="mm")
    with pytest.raises(GraphError, match="node split: a node with this id already exists"):
        g.apply("relu", Value("x"), name="split")
    with pytest.raises(GraphError, match="node bad: relu: unknown attribute"):
        g.apply("relu", Value("x"), name="bad", alpha=1.0)
    with pytest.raises(GraphError, match="is a source"):
        g.apply("input", shape=(1,))
    with pytest.raises(GraphError, match="inputs must be Values"):
        g.apply("relu", "x")
    with pytest.raises(GraphError, match="takes 2 inputs"):
        g.apply("add", Value("x"))
    with pytest.raises(GraphError, match="output 3 does not exist"):
        g.apply("relu", Value("split", 3))
    with pytest.raises(GraphError, match="already defined"):
        g.output("y", Value("x"))
    with pytest.raises(GraphError, match="scope name"):
        with g.scope("a/b"):
            pass


def test_tensor_type_and_value_validate_themselves():
    t = TensorType([2, np.int64(3)], "bf16")
    assert t.shape == (2, 3) and t.nbytes == 12 and str(t) == "bf16[2,3]"
    with pytest.raises(GraphError, match="negative"):
        TensorType((2, -1), "fp32")
    with pytest.raises(GraphError, match="not an int"):
        TensorType((2.0,), "fp32")
    with pytest.raises(ValueError, match="unknown dtype"):
        TensorType((2,), "fp64")
    with pytest.raises(GraphError, match="port"):
        Value("x", -1)
    with pytest.raises(GraphError, match="non-empty node id"):
        Value("")
    with pytest.raises(GraphError, match="must be a tuple of ints"):
        TensorType(3, "fp32")


def test_weights_are_lazy_seeded_by_name_and_read_only():
    g = small_graph()
    assert "fc/w" not in g._cache
    w = g.constant_value("fc/w")
    assert w.dtype == np.float32 and w.shape == (8, 4) and not w.flags.writeable
    assert np.array_equal(w, small_graph().constant_value("fc/w"))
    other = Graph("small", seed=5)
    other.weight("fc/w", (8, 4))
    assert not np.array_equal(w, other.constant_value("fc/w"))
    assert abs(float(np.std(w)) - 0.02) < 0.01
    ones = g.weight("gamma", (4,), init="ones")
    shifted = g.weight("beta", (1000,), scale=0.1, offset=1.0, init="uniform")
    assert np.all(g.constant_value(ones.node) == 1.0)
    assert np.all(np.abs(g.constant_value(shifted.node) - 1.0) <= 0.1)
    with pytest.raises(GraphError, match="init 'orthogonal'"):
        RandomInit("orthogonal", 1.0, 0)
    with pytest.raises(GraphError, match="need a float dtype"):
        g.weight("ids", (3,), dtype="int32")
        g.constant_value("ids")


def test_constants_hold_private_read_only_copies():
    g = Graph()
    array = np.arange(6, dtype=np.float64).reshape(2, 3)
    c = g.constant(array, "table")
    array[0, 0] = 100.0
    assert g.types(c.node)[0] == TensorType((2, 3), "fp32")
    assert g.constant_value(c.node)[0, 0] == 0.0
    assert g.constant(np.arange(3), "ids").node == "ids"
    assert g.types("ids")[0].dtype.name == "int32"


def test_graph_level_errors():
    g = small_graph()
    with pytest.raises(GraphError, match="node x: a node with this id already exists"):
        g.input("x", (1,))
    with pytest.raises(GraphError, match="node y: is not a graph input"):
        g.with_input("y", (1,))
    with pytest.raises(GraphError, match="node fc/relu: is not a constant held by the graph"):
        g.constant_value("fc/relu")
    with pytest.raises(GraphError, match="unknown dtype 'fp64'"):
        g.constant(np.zeros(2), dtype="fp64")
    with pytest.raises(GraphError, match="scale nan must be >= 0"):
        RandomInit("normal", float("nan"), 0)
    g.nx.add_edge("concat", "fc/matmul", key=2, port=0, type=g.types("concat")[0])
    with pytest.raises(GraphError, match="the graph has a cycle"):
        g.nodes  # noqa: B018


def test_inference_must_give_the_declared_number_of_outputs(monkeypatch):
    from dataclasses import replace

    from kernels.graph.ops import OPS
    monkeypatch.setitem(OPS, "relu", replace(OPS["relu"], infer=lambda op, ins: ins + ins))
    g = Graph()
    with pytest.raises(GraphError, match=r"node relu: \(relu\) inference gave 2 outputs, the op "
                                         "declares 1"):
        g.apply("relu", g.input("x", (2,)))


def test_copy_is_independent():
    g = small_graph()
    h = g.copy()
    h.annotate("fc/matmul", "note", 1)
    h.output("extra", Value("x"))
    assert "note" not in g.annotations("fc/matmul")
    assert "extra" not in g.outputs
    assert h.nodes == g.nodes


def test_editing_keeps_the_graph_consistent():
    g = small_graph()
    with pytest.raises(GraphError, match="still used"):
        g.remove("fc/relu")
    with pytest.raises(GraphError, match="types differ"):
        g.replace_uses(Value("fc/relu"), Value("x"))
    with pytest.raises(GraphError, match="changes output 0"):
        g.set_op("fc/relu", Operator("reshape", {"shape": (8,)}), [Value("fc/add")])
    g.replace_uses(Value("fc/relu"), Value("fc/add"))
    g.remove("fc/relu")
    assert g.inputs("split") == (Value("fc/add"),)
    with pytest.raises(GraphError, match="no such node"):
        g.op("fc/relu")


def test_format_prints_one_line_per_node_with_types():
    text = small_graph().format()
    lines = text.splitlines()
    assert lines[0] == "graph small: 8 nodes, inputs x"
    assert len(lines) == 1 + 8 + 1
    assert "fc/matmul = matmul(x: fp32[2,8], fc/w: fp32[8,4]) -> fp32[2,4]" in text
    assert "split     = split[axis=1 sizes=(1,3)](fc/relu: fp32[2,4]) -> fp32[2,1], fp32[2,3]" \
        in text
    assert "fc/w      = constant<0.02 * normal(seed=4)> -> fp32[8,4]" in text
    assert lines[-1] == "  output y = concat: fp32[2,4]"


def test_json_dump_describes_nodes_and_annotations():
    g = compile(small_graph(), "inf2")
    data = json.loads(g.dumps())
    assert data["name"] == "small" and data["outputs"] == {"y": "concat"}
    by_id = {n["id"]: n for n in data["nodes"]}
    linear = by_id["fc/matmul"]
    assert linear["op"] == "linear" and linear["attrs"] == {"activation": "relu"}
    assert linear["inputs"] == ["x", "fc/w", "fc/b"]
    assert linear["outputs"] == [{"shape": [2, 4], "dtype": "fp32"}]
    assert linear["annotations"]["layout"]["tiles"]["record"] == "GemmTiles"
    assert linear["annotations"]["hbm"][0]["region"] == "activations"
    assert by_id["concat"]["inputs"] == ["split:1", "split"]
    assert by_id["fc/w"]["init"] == {"record": "RandomInit", "kind": "normal", "scale": 0.02,
                                     "seed": 4, "offset": 0.0}
    assert data["meta"]["hbm"]["weights_bytes"] > 0
