"""Unmodified NKI kernel files (tests/nki_files, current and legacy API) run through
`run_nki_file` and `ncemu nki`, each against a numpy golden; the import mapping is undone after
every run; unsupported constructs fail naming the construct and the file's line."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from emulator.cli import main
from emulator.kernel_runner import GridReport, NkiFileRun, run_nki_file
from emulator.nki_compat import load_kernel_file, nki_imports
from kernels.nki import NkiError, TileIndexError, TracingError, UnsupportedConstructError

FILES = Path(__file__).resolve().parent.parent / "nki_files"
RNG = np.random.default_rng(5)


def line_of(name: str, text: str) -> int:
    """The line of tests/nki_files/`name` that contains `text` (so tests name no numbers)."""
    for number, line in enumerate((FILES / name).read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {name}")


# ---- goldens -----------------------------------------------------------------------------------
def selective_scan(delta, u, A, B, C):
    out = np.zeros(delta.shape)
    for s in range(A.shape[1]):
        decay, drive = np.exp(delta * A[:, s:s + 1]), delta * u * B[s]
        h = np.zeros(delta.shape[0])
        for t in range(delta.shape[1]):
            h = decay[:, t] * h + drive[:, t]
            out[:, t] += h * C[s, t]
    return out


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def f32(*shape, scale=1.0):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


@dataclass(frozen=True)
class Case:
    """A kernel of a file, its inputs (.npz key order), its numpy golden and tolerance."""

    file: str
    kernel: str
    inputs: dict
    golden: Callable[..., object]
    grid: tuple[int, ...] | None = None
    rtol: float = 1e-5
    atol: float = 1e-5

    @property
    def id(self) -> str:
        return f"{self.file[:-3]}::{self.kernel}"

    def expected(self) -> tuple:
        values = self.golden(**{k: np.asarray(v) for k, v in self.inputs.items()})
        return values if isinstance(values, tuple) else (values,)


def _mamba_inputs() -> dict:
    return {"delta": RNG.uniform(0.05, 0.5, (128, 40)).astype(np.float32), "u": f32(128, 40),
            "A": -RNG.uniform(0.5, 2.0, (128, 3)).astype(np.float32), "B": f32(3, 40),
            "C": f32(3, 40)}


_P, _F = np.arange(128)[:, None], np.arange(96)[None, :]
CASES = [
    Case("tensor_add.py", "nki_tensor_add_kernel_",
         {"a_input": f32(256, 1024), "b_input": f32(256, 1024)},
         lambda a_input, b_input: a_input + b_input, grid=(2, 2)),
    Case("transpose2d.py", "transpose2d_kernel", {"in_tensor": f32(256, 384)},
         lambda in_tensor: in_tensor.T),
    Case("average_pool2d.py", "tensor_avgpool_kernel",
         {"in_tensor": f32(64, 12, 8), "pool_size": np.array(2)},
         lambda in_tensor, pool_size: in_tensor.reshape(64, 6, 2, 4, 2).mean(axis=(2, 4))),
    Case("matmul.py", "nki_matmul_basic_", {"lhsT": f32(128, 64), "rhs": f32(128, 512)},
         lambda lhsT, rhs: lhsT.T.astype(np.float64) @ rhs, rtol=1e-4, atol=1e-4),
    *(Case("matmul.py", name, {"lhsT": f32(512, 256), "rhs": f32(512, 1024)},
           lambda lhsT, rhs: lhsT.T.astype(np.float64) @ rhs, rtol=1e-4, atol=1e-4)
      for name in ("nki_matmul_tiled_", "nki_matmul_hoist_load_",
                   "nki_matmul_block_free_dimension_", "nki_matmul_fully_optimized_")),
    Case("mamba.py", "mamba_selective_scan", _mamba_inputs(), selective_scan, rtol=1e-4),
    # legacy API
    Case("legacy_kernels.py", "add_ragged", {"a": f32(300, 64), "b": f32(300, 64)},
         lambda a, b: a + b),
    Case("legacy_kernels.py", "interleave", {"x": f32(100, 40)},
         lambda x: np.stack([x, -x], axis=2).reshape(100, 80)),
    Case("legacy_kernels.py", "scale_head_columns", {"x": f32(100, 40), "head": np.array(13)},
         lambda x, head: np.concatenate([2 * x[:, :head], np.zeros_like(x[:, head:])], axis=1)),
    Case("legacy_kernels.py", "matmul_hoisted", {"lhsT": f32(512, 256), "rhs": f32(512, 1024)},
         lambda lhsT, rhs: lhsT.T.astype(np.float64) @ rhs, rtol=1e-4, atol=1e-4),
    Case("legacy_kernels.py", "matmul_fully_blocked",
         {"lhsT": f32(512, 256), "rhs": f32(512, 1024)},
         lambda lhsT, rhs: lhsT.T.astype(np.float64) @ rhs, rtol=1e-4, atol=1e-4),
    Case("legacy_kernels.py", "matmul_language", {"x": f32(96, 128), "y": f32(128, 256)},
         lambda x, y: x.astype(np.float64) @ y, rtol=1e-4, atol=1e-4),
    Case("legacy_kernels.py", "softmax_ragged", {"x": f32(300, 200, scale=4.0)},
         lambda x: softmax(x.astype(np.float64))),
    Case("legacy_kernels.py", "mamba_legacy", _mamba_inputs(), selective_scan, rtol=1e-4),
    Case("legacy_kernels.py", "causal_transpose", {"x": f32(128, 96)},
         lambda x: (np.where(_P >= _F, x, -1e4).T, _P * 100 + _F)),
]


def check(case: Case, outputs: dict) -> None:
    expected = case.expected()
    assert list(outputs) == [f"out{k}" for k in range(len(expected))]
    for got, want in zip(outputs.values(), expected):
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=case.rtol,
                                   atol=case.atol)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_file_kernel_through_python_matches_numpy(case):
    run = run_nki_file(str(FILES / case.file), case.kernel, case.inputs, grid=case.grid)
    assert isinstance(run, NkiFileRun) and run.report.latency_ns > 0
    check(case, run.outputs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_file_kernel_through_the_cli_matches_numpy(case, tmp_path, capsys):
    np.savez(tmp_path / "in.npz", *case.inputs.values())  # positional: arr_0, arr_1, ...
    argv = ["nki", f"{FILES / case.file}::{case.kernel}", "--inputs", str(tmp_path / "in.npz"),
            "--outputs", str(tmp_path / "out.npz")]
    if case.grid:
        argv += ["--grid", ",".join(map(str, case.grid))]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"kernel {case.kernel}" in printed and "latency" in printed
    with np.load(tmp_path / "out.npz", allow_pickle=False) as saved:
        check(case, {name: saved[name] for name in saved.files})


def test_inputs_by_parameter_name_in_any_order():
    a, b = f32(128, 512), f32(128, 512)
    run = run_nki_file(str(FILES / "tensor_add.py"), "nki_tensor_add_kernel_",
                       {"b_input": b, "a_input": a - b}, timing=False)
    np.testing.assert_array_equal(run.outputs["out0"], a - b + b)
    assert run.report is None


def test_cli_json_and_trace_of_a_grid(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", f32(256, 512), f32(256, 512))
    assert main(["nki", f"{FILES / 'tensor_add.py'}::nki_tensor_add_kernel_", "--inputs",
                 str(tmp_path / "in.npz"), "--grid", "2,1", "--json", "--trace",
                 str(tmp_path / "trace.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["grid"] == [2, 1] and len(report["programs"]) == 2
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    assert {e["pid"] for e in events} == {0, 1}
    first_of = {pid: min(e["ts"] for e in events if e["pid"] == pid and "ts" in e)
                for pid in (0, 1)}
    assert first_of[1] >= report["programs"][0]["latency_ns"] / 1e3 - 1e-9


def test_a_grid_report_is_the_sum_of_its_instances():
    run = run_nki_file(str(FILES / "tensor_add.py"), "nki_tensor_add_kernel_",
                       [f32(256, 512), f32(256, 512)], grid=(2, 1))
    assert isinstance(run.report, GridReport)
    assert run.report.latency_ns == pytest.approx(sum(r.latency_ns for r in run.report.programs))


# ---- the import mapping is scoped to the run ----------------------------------------------------
def _nki_names() -> set[str]:
    return {name for name in sys.modules if name.split(".")[0] in ("nki", "neuronxcc")}


def test_import_mapping_is_undone_after_a_run():
    case = CASES[0]
    run_nki_file(str(FILES / case.file), case.kernel, case.inputs, grid=case.grid,
                 timing=False)  # first run imports ncemu's own modules
    modules, finders = set(sys.modules), list(sys.meta_path)
    assert importlib.util.find_spec("nki") is None and not _nki_names()
    run_nki_file(str(FILES / "legacy_kernels.py"), "add_ragged", [f32(130, 8), f32(130, 8)],
                 timing=False)
    assert set(sys.modules) == modules and sys.meta_path == finders
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("nki")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("neuronxcc.nki.language")


def test_import_mapping_is_undone_when_the_kernel_fails_and_restores_earlier_entries():
    earlier = type(sys)("nki")  # stands for a real nki package the user had imported
    sys.modules["nki"] = earlier
    try:
        with pytest.raises(UnsupportedConstructError):
            run_nki_file(str(FILES / "unsupported.py"), "unknown_function", [f32(8, 8)])
        assert sys.modules["nki"] is earlier
        assert _nki_names() == {"nki"}
    finally:
        del sys.modules["nki"]
    assert importlib.util.find_spec("nki") is None


def test_inside_the_mapping_both_generations_resolve_to_ncemu():
    from kernels.nki import isa, language, legacy
    with nki_imports():
        import neuronxcc.nki.isa as legacy_isa
        import nki.isa as current_isa
        import nki.language as nl
        from neuronxcc import nki as legacy_nki
        from neuronxcc.nki.language import par_dim
        assert nl is language and current_isa is isa and legacy_isa is legacy
        assert legacy_nki.language is language and par_dim is language.par_dim
        with pytest.raises(ModuleNotFoundError, match="nki.profiler is not provided by ncemu"):
            importlib.import_module("nki.profiler")
    assert not _nki_names()


# ---- NKI's own runners inside a file -------------------------------------------------------------
def test_simulate_baremetal_benchmark_and_direct_calls_inside_a_file():
    x = f32(64, 32)
    with nki_imports():
        host = load_kernel_file(str(FILES / "host_runners.py"))
        for run in (host.with_simulate_kernel, host.with_baremetal, host.called_directly):
            np.testing.assert_array_equal(run(x), host.reference(x))
        report, p99_us, outputs = host.with_benchmark(x)
        np.testing.assert_array_equal(outputs, host.reference(x))
        assert p99_us == pytest.approx(report.latency_ns / 1e3) and p99_us > 0
        current = load_kernel_file(str(FILES / "current_host.py"))
        np.testing.assert_array_equal(current.run(x), x + 1)
    assert not _nki_names()


# ---- unsupported constructs name the construct and the line ------------------------------------
ERRORS = [
    ("unsupported.py", "indirect_rows", {"data": f32(256, 64),
                                         "indices": np.zeros((128, 1), np.int32)},
     UnsupportedConstructError, r"vector_offset \(indirect access\)", "src=data.ap("),
    ("unsupported.py", "unknown_function", {"x": f32(8, 8)}, UnsupportedConstructError,
     r"nl\.softplus is not supported", "nl.softplus"),
    ("legacy_unsupported.py", "gather_rows", {"data": f32(256, 64),
                                              "indices": np.zeros((128, 1), np.int32)},
     UnsupportedConstructError, r"indexed by tensor index_tile: indirect .* DMA",
     "data[index_tile"),
    ("legacy_unsupported.py", "triangular_load", {"x": f32(64, 64)}, UnsupportedConstructError,
     r"mask i0 - i1 >= 0 depends on 2 index axes", "mask=(i_p >= i_f)"),
    ("legacy_unsupported.py", "unmasked_overrun", {"x": f32(300, 16)}, TileIndexError,
     r"index vectors reach 256\.\.383 on dimension 0 of size 300; .* mask=",
     "nl.store(out[i_p + 128 * m"),
]


@pytest.mark.parametrize("file,kernel,inputs,error,message,marker", ERRORS,
                         ids=[f"{e[0][:-3]}::{e[1]}" for e in ERRORS])
def test_unsupported_constructs_name_the_construct_and_the_file_line(file, kernel, inputs, error,
                                                                     message, marker):
    line = line_of(file, marker)
    with pytest.raises(error, match=rf"{message}.*\(at {file}:{line} in {kernel}\)"):
        run_nki_file(str(FILES / file), kernel, inputs)


def test_cli_reports_errors_with_the_file_line(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", x=f32(8, 8))
    assert main(["nki", f"{FILES / 'unsupported.py'}::unknown_function", "--inputs",
                 str(tmp_path / "in.npz")]) == 1
    line = line_of("unsupported.py", "nl.softplus")
    assert (f"nl.softplus is not supported by the ncemu kernel language (at unsupported.py:"
            f"{line} in unknown_function)") in capsys.readouterr().err
    assert main(["nki", f"{FILES / 'unknown_import.py'}::anything", "--inputs",
                 str(tmp_path / "in.npz")]) == 1
    err = capsys.readouterr().err
    assert "ModuleNotFoundError: module neuronxcc.nki.kernels is not provided by ncemu" in err
    assert "(at unknown_import.py:3 in <module>)" in err


def test_cli_refuses_a_target_without_a_kernel_and_a_missing_kernel(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", x=f32(8, 8))
    assert main(["nki", str(FILES / "tensor_add.py"), "--inputs",
                 str(tmp_path / "in.npz")]) == 2
    assert "FILE.py::KERNEL" in capsys.readouterr().err
    with pytest.raises(TracingError, match=r"has no kernel 'nope'; its @nki\.jit kernels: "
                                           r"nki_tensor_add_kernel_"):
        run_nki_file(str(FILES / "tensor_add.py"), "nope", [])
    assert issubclass(TracingError, NkiError)
    with pytest.raises(TypeError, match=r"kernel add_ragged\(a_tensor, b_tensor\): missing a "
                                        r"required argument: 'b_tensor' \(given inputs x\)"):
        run_nki_file(str(FILES / "legacy_kernels.py"), "add_ragged", {"x": f32(8, 8)})
