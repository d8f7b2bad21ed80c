"""Reports: the JSON schema, the text table, the Perfetto trace and the CLI flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emulator.cli import main
from emulator.report import MEMORY_KEYS, SCHEMA
from emulator.runner import run
from isa import format_program
from kernels.programs import tiled_matmul, tiled_matmul_inputs

PROGRAM = tiled_matmul(256, 256, 1024, "bf16")


@pytest.fixture(scope="module")
def result():
    return run(PROGRAM, tiled_matmul_inputs(PROGRAM))


def test_json_has_the_documented_keys(result):
    doc = json.loads(json.dumps(result.report.to_json()))
    assert doc["schema"] == SCHEMA == "ncemu.report/1"
    assert doc["latency_ns"] == pytest.approx(result.report.latency_ns)
    core = doc["cores"][0]
    assert set(core["memory"]) == set(MEMORY_KEYS)
    for name in ("tensor", "vector", "dma"):
        assert set(core["engines"][name]) == {"busy_ns", "cycles", "utilization",
                                              "instructions", "flops"}
    assert core["engines"]["tensor"]["flops"] == 2 * 256 * 256 * 1024
    assert core["engines"]["tensor"]["instructions"] == 2 * 2 * 2  # M, N, K tiles
    assert 0 < doc["tensor_hfu"] <= 1
    hbm = core["memory"]["hbm_read_bytes"] + core["memory"]["hbm_write_bytes"]
    assert doc["arithmetic_intensity"] == pytest.approx(result.report.flops / hbm)


def test_text_report_names_every_engine(result):
    text = result.report.text()
    for name in ("tensor", "vector", "dma", "latency", "HFU", "hbm_read"):
        assert name in text


def test_trace_has_one_track_per_stream_and_one_slice_per_instruction(result):
    trace = result.report.chrome_trace()
    events = trace["traceEvents"]
    tracks = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert tracks == {s.name for s in PROGRAM.streams}
    slices = [e for e in events if e["ph"] == "X"]
    real = [i for s in PROGRAM.streams for i in s.instructions
            if i.opcode not in ("wait", "signal")]
    assert len(slices) == len(real)
    assert {e["name"] for e in slices} == {"dma_copy", "matmul", "tensor_copy"}
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in slices)
    end = max(e["ts"] + e["dur"] for e in slices)
    assert end * 1e3 == pytest.approx(result.report.latency_ns, rel=1e-9)


def test_cli_json_and_trace(tmp_path, capsys):
    trace = tmp_path / "trace.json"
    assert main(["run", "--shape", "256x128x512", "--json", "--trace", str(trace)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == SCHEMA
    assert json.loads(trace.read_text())["traceEvents"]


def test_cli_timing_only_computes_no_values(capsys):
    assert main(["run", "--shape", "256x128x512", "--timing-only"]) == 0
    out = capsys.readouterr().out
    assert "latency" in out and "numerics" not in out


def test_cli_runs_an_assembly_file_with_inputs(tmp_path, capsys):
    program = tiled_matmul(128, 128, 512, "fp32")
    path = tmp_path / "mm.nasm"
    path.write_text(format_program(program))
    inputs = tiled_matmul_inputs(program, seed=1)
    np.savez(tmp_path / "in.npz", **inputs)
    out = tmp_path / "out.npz"
    assert main(["run", str(path), "--inputs", str(tmp_path / "in.npz"),
                 "--outputs", str(out)]) == 0
    with np.load(out, allow_pickle=False) as saved:
        expected = inputs["lhsT"].T.astype(np.float64) @ inputs["rhs"]
        np.testing.assert_allclose(saved["result"], expected, rtol=1e-5, atol=1e-4)
    assert "latency" in capsys.readouterr().out


def test_cli_rejects_unknown_target_and_missing_file(capsys):
    assert main(["run", "nonsense"]) == 2
    assert main(["run", "missing.nasm"]) == 2
    err = capsys.readouterr().err
    assert "unknown target 'nonsense'" in err and "no such program file" in err
