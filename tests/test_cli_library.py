"""`ncemu run NAME`: every library kernel by name, with shapes, layouts and options."""

from __future__ import annotations

import json

import pytest

from emulator.cli import main
from kernels.library import LIBRARY


def test_list_names_every_kernel(capsys):
    assert main(["run", "--list"]) == 0
    out = capsys.readouterr().out
    for name in LIBRARY:
        assert f"  {name} " in out
    assert "tiled_matmul" in out


def test_describe_shows_shapes_and_layouts(capsys):
    assert main(["run", "--describe", "matmul_naive"]) == 0
    out = capsys.readouterr().out
    assert "TILE_N" in out and "K" in out


@pytest.mark.parametrize("name", ["matmul_naive", "softmax", "layernorm", "attention",
                                  "conv2d", "add"])
def test_library_kernel_runs_by_name_and_passes(name, capsys):
    assert main(["run", name, "--dtype", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "latency" in out


def test_shape_and_layout_change_the_time_not_the_result(capsys):
    times = {}
    for tile in (128, 512):
        assert main(["run", "matmul_naive", "--shape", "128x256x1024", "--layout",
                     f"TILE_N={tile}", "--json"]) == 0
        times[tile] = json.loads(capsys.readouterr().out)["latency_ns"]
    assert times[128] > times[512]


def test_timing_only_library_run(capsys):
    assert main(["run", "softmax", "--shape", "rows=128,cols=512", "--timing-only"]) == 0
    out = capsys.readouterr().out
    assert "latency" in out and "numerics" not in out


@pytest.mark.parametrize("argv, message", [
    (["run", "softmax", "--shape", "rows=128,cols"], "--shape 'cols' must be KEY=VALUE"),
    (["run", "softmax", "--shape", "128x128x128"], "kernel softmax is sized by rows, cols"),
    (["run", "--describe", "nope"], "unknown kernel 'nope'"),
    (["run", "matmul_naive", "--layout", "TILE_N=100"], "TILE_N"),
])
def test_bad_library_arguments(argv, message, capsys):
    assert main(argv) == 1
    assert message in capsys.readouterr().err
