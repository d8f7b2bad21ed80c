"""Operator graphs: the IR (`ir.Graph` on networkx), the operator table (`ops.OPS`), reference
evaluation in numpy (`reference.evaluate`), the compiler passes (`compiler.compile`), model
builders (`models`) and ONNX import (`onnx_import.load_onnx`, needs the optional `onnx`).

    from kernels.graph import compile, evaluate, models
    g = models.bert(models.BERT_BASE, layers=2, seq_len=64)
    out = evaluate(g, feed, "bf16")                  # the numpy forward pass, bf16 storage
    c = compile(g, "inf2", cores=2, partition="pipeline", dump_after="fusion")
    print(c)                                          # one line per node with its annotations
"""

from kernels.graph.check import check
from kernels.graph.compiler import CompileOptions, compile, format_passes, passes
from kernels.graph.ir import Graph, RandomInit
from kernels.graph.onnx_import import load_onnx
from kernels.graph.ops import OPS, Operator, format_ops
from kernels.graph.reference import evaluate
from kernels.graph.tensor import GraphError, TensorType, Value

__all__ = [
    "OPS", "CompileOptions", "Graph", "GraphError", "Operator", "RandomInit", "TensorType",
    "Value", "check", "compile", "evaluate", "format_ops", "format_passes", "load_onnx",
    "passes",
]
