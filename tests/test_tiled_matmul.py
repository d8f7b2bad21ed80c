"""The built-in tiled matmul kernel (the acceptance test of issue 1) and the `ncemu run` CLI.

Reference: float64 numpy product of the operands rounded to the kernel's dtype (bf16 rounding
with ml_dtypes), compared within rtol 1e-2 as the issue asks.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from emulator.cli import main
from isa import INF2, MatMul, format_program, parse_program
from kernels.programs import tiled_matmul
from tests.conftest import execute_functional, readme_program

README_PROGRAM = readme_program()


def operands(k: int, m: int, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"lhsT": rng.standard_normal((k, m)).astype(np.float32),
            "rhs": rng.standard_normal((k, n)).astype(np.float32)}


def golden(inputs: dict[str, np.ndarray], storage) -> np.ndarray:
    lhs = inputs["lhsT"].astype(storage).astype(np.float64)
    rhs = inputs["rhs"].astype(storage).astype(np.float64)
    return lhs.T @ rhs


def test_acceptance_1024x512x1024_bf16_matches_numpy():
    program = tiled_matmul(1024, 512, 1024, "bf16")
    program.validate(INF2)
    inputs = operands(512, 1024, 1024)
    out = execute_functional(program, inputs).outputs["result"]
    expected = golden(inputs, ml_dtypes.bfloat16)
    assert out.shape == (1024, 1024) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-2, atol=1e-2 * np.abs(expected).max())
    # bf16 products are exact in fp32: only the fp32 accumulation of 512 terms errs
    assert np.abs(out - expected).max() < 512 * 2.0**-24 * np.abs(expected).max() * 8


@pytest.mark.parametrize("m, k, n, dt, tile_n, buffers, storage", [
    (128, 128, 512, "bf16", 512, 2, ml_dtypes.bfloat16),
    (256, 384, 256, "fp16", 128, 1, np.float16),
    (384, 128, 1024, "fp32", 256, 3, np.float32),
    (128, 256, 64, "fp8_e4m3", 32, 8, ml_dtypes.float8_e4m3fn),
])
def test_smaller_shapes_dtypes_and_buffering(m, k, n, dt, tile_n, buffers, storage):
    program = tiled_matmul(m, k, n, dt, tile_n=tile_n, buffers=buffers)
    matmuls = [i for s in program.streams for i in s.instructions if isinstance(i, MatMul)]
    assert len(matmuls) == (m // 128) * (k // 128) * (n // tile_n)
    assert all(mm.kmn == (128, 128, tile_n) for mm in matmuls)
    inputs = operands(k, m, n, seed=m + n)
    out = execute_functional(program, inputs, rng=np.random.default_rng(k)).outputs["result"]
    expected = golden(inputs, storage)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_tiled_matmul_round_trips_through_assembly():
    program = tiled_matmul(256, 256, 512, "bf16", tile_n=256)
    assert parse_program(format_program(program)) == program


@pytest.mark.parametrize("kwargs, message", [
    (dict(m=1000), r"M=1000 must be a positive multiple of its tile size 128"),
    (dict(k=100), r"K=100 must be a positive multiple of its tile size 128"),
    (dict(n=768), r"N=768 must be a positive multiple of its tile size 512"),
    (dict(m=0), r"M=0 must be a positive multiple of its tile size 128"),
    (dict(tile_n=1024), r"tile_n=1024 must be in 1\.\.512"),
    (dict(tile_n=0), r"tile_n=0 must be in 1\.\.512"),
    (dict(buffers=9), r"buffers=9 must be in 1\.\.8 \(PSUM banks\)"),
    (dict(buffers=0), r"buffers=0 must be in 1\.\.8 \(PSUM banks\)"),
    (dict(m=65536, k=128, n=65536), r"operands need 266240 bytes per partition; SBUF has 196608"),
    (dict(dt="fp64"), r"unknown dtype 'fp64'"),
])
def test_tiled_matmul_rejects_what_does_not_tile(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiled_matmul(**kwargs)


# ---- the command line -----------------------------------------------------------------------
def test_cli_runs_the_builtin_matmul_and_passes(capsys):
    assert main(["run", "--shape", "256x128x512"]) == 0
    out = capsys.readouterr().out
    assert "program tiled_matmul_256x128x512_bf16" in out
    assert "vs numpy: PASS (rtol 1e-2)" in out


def test_cli_missing_program_file_returns_2(capsys, tmp_path):
    assert main(["run", str(tmp_path / "missing.nasm")]) == 2
    assert "no such program file" in capsys.readouterr().err
    assert main(["run", "missing.nasm"]) == 2


def test_cli_unknown_target_returns_2(capsys):
    assert main(["run", "conv"]) == 2
    assert "unknown target 'conv'" in capsys.readouterr().err


def test_cli_bad_shape_is_an_argument_error(capsys):
    assert main(["run", "--shape", "256x128"]) == 2
    assert "must be MxKxN" in capsys.readouterr().err


def test_cli_runs_an_assembly_file_with_random_inputs(capsys, tmp_path):
    source = tmp_path / "scale.nasm"
    source.write_text(README_PROGRAM)
    outputs = tmp_path / "out.npz"
    assert main(["run", str(source), "--outputs", str(outputs)]) == 0
    assert "program scale_by_two: 7 instructions in 3 streams" in capsys.readouterr().out
    with np.load(outputs) as saved:
        y = saved["y"]
    assert y.shape == (128, 64) and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.abs(y).max() > 0


def test_cli_runs_an_assembly_file_with_npz_inputs(tmp_path):
    source = tmp_path / "scale.nasm"
    source.write_text(README_PROGRAM)
    x = np.arange(128 * 64, dtype=np.float32).reshape(128, 64) / 7
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["run", str(source), "--inputs", str(tmp_path / "in.npz"),
                 "--outputs", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as saved:
        np.testing.assert_array_equal(saved["y"], 2 * x)


def test_cli_reports_a_malformed_program_with_its_line(capsys, tmp_path):
    source = tmp_path / "bad.nasm"
    source.write_text(README_PROGRAM.replace("op0=multiply", "op0=multiplyy"))
    assert main(["run", str(source)]) == 1
    assert "line 9: tensor_scalar: unknown ALU op op0='multiplyy'" in capsys.readouterr().err
