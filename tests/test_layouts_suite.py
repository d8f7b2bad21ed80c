"""The layouts benchmark suite and the library-kernel sweep workloads it runs: the quick suite's
JSON and plots, parameter resolution and errors, shape-only inputs, and latencies equal to
tracing and running the library kernel directly."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks import layouts
from emulator.kernel_runner import trace
from emulator.machine import INSTANCES
from emulator.runner import run
from emulator.sweep import Point, SpecError, parse_spec, run_point
from emulator.workloads import WORKLOADS, library_input_specs, library_workload, workload
from kernels.library import LIBRARY, Param
from kernels.trace import TensorSpec

KERNELS = ("matmul", "conv2d", "attention", "layernorm", "softmax")
MACHINES = ("inf1.xlarge", "inf2.xlarge")


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path, str]:
    """The quick suite, run once: (its JSON document, the plots folder, what it printed)."""
    folder = tmp_path_factory.mktemp("layouts")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        layouts.main(["--quick", "--json", str(folder / "layouts.json"), "--plots",
                      str(folder / "plots"), "--csv", str(folder / "layouts.csv")])
    return json.loads((folder / "layouts.json").read_text()), folder / "plots", printed.getvalue()


# --- the suite --------------------------------------------------------------------------------

def test_quick_suite_has_a_best_config_per_kernel_and_machine(quick):
    results, _, _ = quick
    assert results["schema"] == layouts.SCHEMA and results["quick"] is True
    assert tuple(results["machines"]) == MACHINES
    assert tuple(k["kernel"] for k in results["kernels"]) == KERNELS
    for kernel in results["kernels"]:
        for machine in MACHINES:
            m = kernel["machines"][machine]
            ok = [r for r in m["rows"] if r["status"] == "ok"]
            assert ok, f"{kernel['kernel']} on {machine}: no point ran"
            latencies = [r["latency_ns"] for r in ok]
            assert m["best"]["latency_ns"] == min(latencies)
            assert m["worst"]["latency_ns"] == max(latencies)
            assert m["spread"] == pytest.approx(max(latencies) / min(latencies))
            assert m["best"] in m["rows"]
            assert m["points"] == len(m["rows"]) == m["ok"] + m["errors"]


def test_profiles_take_the_best_point_of_each_value(quick):
    results, _, _ = quick
    matmul = next(k for k in results["kernels"] if k["kernel"] == "matmul")
    assert matmul["parameters"][0] == layouts.VARIANT
    variants = [entry["value"] for entry in matmul["profiles"][layouts.VARIANT]]
    assert variants == ["naive", "hoisted", "blocked", "fully blocked", "hand-scheduled"]
    for machine in MACHINES:
        rows = [r for r in matmul["machines"][machine]["rows"] if r["status"] == "ok"]
        for entry in matmul["profiles"]["TILE_N"]:
            with_value = [r["latency_ns"] for r in rows if r["layout"].get("TILE_N")
                          == entry["value"]]
            assert entry[machine]["latency_ns"] == min(with_value)
        # The best of the variants' bests is the study's best.
        assert min(e[machine]["latency_ns"] for e in matmul["profiles"][layouts.VARIANT]) == \
            matmul["machines"][machine]["best"]["latency_ns"]


def test_quick_suite_prints_a_table_per_kernel(quick):
    _, _, printed = quick
    for kernel in KERNELS:
        assert f"== {kernel}:" in printed
    assert "best configuration" in printed and "spread" in printed


def test_plots_exist_and_are_not_blank(quick):
    import matplotlib.image

    _, plots, _ = quick
    for kernel in KERNELS:
        image = matplotlib.image.imread(plots / f"{kernel}.png")
        assert image.shape[0] > 300 and image.shape[1] > 300
        rgb = np.round(255 * image[..., :3].reshape(-1, 3)).astype(np.int64)
        # Lines, text and axes: many colours, and a good share of non-white pixels.
        assert len(np.unique(rgb @ np.array([65536, 256, 1]))) > 20
        assert (rgb.min(axis=1) < 230).mean() > 0.01


def test_a_study_needs_a_label_for_each_workload():
    with pytest.raises(ValueError, match=r"study x: workloads \['lib.softmax'\] have no label"):
        layouts.Study("x", "p", {}, (layouts.Grid(("lib.softmax",), {}, {}),))


def test_a_study_grid_is_checked_as_a_sweep_spec():
    study = layouts.Study("x", "p", {"lib.softmax": "softmax"}, (
        layouts.Grid(("lib.softmax",), {"rows": 128}, {"NORMALIZE": ("divide", "halve")}),))
    with pytest.raises(SpecError, match=r"sweep\.layout\.NORMALIZE\[1\] = 'halve': must be "
                                        r"one of reciprocal, divide"):
        study.specs(MACHINES)


def test_suite_spec_runs_each_point_once():
    spec = parse_spec({"sweep": {"workload": ["lib.softmax"], "machines": ["inf2"],
                                 "layout": {"NORMALIZE": ["divide", "reciprocal"]}}})
    other = parse_spec({"sweep": {"workload": ["lib.layernorm"], "machines": ["inf2"]}})
    suite = layouts.SuiteSpec.of("s", [spec, spec, other])
    assert [p.id for p in suite.points()] == [p.id for p in spec.points() + other.points()]
    assert {"NORMALIZE", "APPLY_ENGINE", "rows", "cols"} <= set(suite.columns())


# --- the library workloads --------------------------------------------------------------------

REQUIRED = ("matmul_naive", "matmul_hoisted", "matmul_blocked", "matmul", "conv2d", "attention",
            "layernorm", "layernorm_naive", "softmax")


def test_every_library_kernel_is_a_workload():
    assert {f"lib.{name}" for name in LIBRARY} <= set(WORKLOADS)
    assert WORKLOADS["matmul"].description.startswith("tiled matmul")  # unchanged


def test_library_workloads_resolve_their_params():
    wl = workload("lib.matmul")
    assert wl.resolve("shape", {"M": 256}) == {"M": 256, "N": 512, "K": 1024, "dtype": "bf16"}
    assert wl.resolve("layout", {"TILES_IN_BLOCK_K": 2}) == {
        "TILES_IN_BLOCK_M": 2, "TILES_IN_BLOCK_N": 1, "TILES_IN_BLOCK_K": 2, "TILE_M": 128,
        "TILE_K": 128, "TILE_N": 512}
    # Int and str options are shape parameters; bool/float ones keep their defaults.
    assert {"stride", "padding"} <= {p.name for p in workload("lib.conv2d").shape}
    assert "causal=False fixed" in workload("lib.attention").description
    assert workload("lib.layernorm").resolve("layout", {"APPLY_ENGINE": "scalar"}) == {
        "APPLY_ENGINE": "scalar"}


def test_library_workloads_reject_unknown_params_naming_them():
    with pytest.raises(ValueError, match=r"workload lib\.matmul_naive has no layout parameter "
                                         r"'TILE_Q'; its layout parameters: TILE_M, TILE_K, "
                                         r"TILE_N"):
        workload("lib.matmul_naive").resolve("layout", {"TILE_Q": 64})
    with pytest.raises(ValueError, match=r"workload lib\.softmax has no shape parameter 'R'"):
        workload("lib.softmax").resolve("shape", {"R": 128})
    with pytest.raises(ValueError, match=r"layout\.KV_TILE = 100: must be one of 128, 256, 512"):
        workload("lib.attention").resolve("layout", {"KV_TILE": 100})
    with pytest.raises(ValueError, match=r"shape\.dtype = 'fp8': must be one of bf16, fp32"):
        workload("lib.layernorm").resolve("shape", {"dtype": "fp8"})
    with pytest.raises(SpecError, match=r"unknown key sweep\.layout\.TILE_N; layout parameters "
                                        r"of lib\.softmax: NORMALIZE"):
        parse_spec({"sweep": {"workload": "lib.softmax", "machines": ["inf2"],
                              "layout": {"TILE_N": [128]}}})


def test_an_invalid_layout_is_a_row_with_the_kernels_message():
    point = Point("lib.matmul_blocked", "inf2.xlarge", (("M", 256), ("N", 256)),
                  (("TILE_N", 512),))
    row = run_point(point, INSTANCES["inf2.xlarge"])
    assert row["status"] == "error"
    assert "N=256 must be a multiple of its block BLOCK_N=512" in row["error"]


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_shape_draws_give_the_shapes_and_dtypes_of_the_inputs(name):
    entry = LIBRARY[name]
    arrays = entry.inputs({}, {}, dtype="bf16")
    specs = library_input_specs(entry, {}, {}, "bf16")
    assert [(s.shape, np.dtype(s.dtype)) for s in specs] == [(a.shape, a.dtype) for a in arrays]


def test_shape_draws_fail_loudly():
    entry = LIBRARY["softmax"]
    with pytest.raises(ValueError, match=r"softmax: dtype 'fp16' is not one of"):
        library_input_specs(entry, {}, {}, "fp16")
    made = replace(entry, make_inputs=lambda shapes, options, dtype, rng: (np.zeros((2, 2)),))
    with pytest.raises(TypeError, match=r"softmax: input 0 of its input maker is ndarray"):
        library_input_specs(made, {}, {}, "bf16")
    drawn = replace(entry, make_inputs=lambda shapes, options, dtype, rng: (
        rng.integers(0, 4, (2, 2)).astype(dtype),))
    with pytest.raises(AttributeError, match=r"integers"):
        library_input_specs(drawn, {}, {}, "bf16")


def test_a_layout_parameter_a_sweep_cannot_take_is_refused():
    entry = replace(LIBRARY["layernorm"], options=(),
                    layout=(Param("eps", 1e-5, "added to the variance"),))
    with pytest.raises(ValueError, match=r"library kernel layernorm: layout parameter "
                                         r"eps=1e-05 is neither int nor str"):
        library_workload(entry)


# One small problem and a non-default layout per required kernel.
CASES = {
    "matmul_naive": ({"M": 256, "N": 256, "K": 256}, {}, {"TILE_N": 128, "TILE_K": 64}),
    "matmul_hoisted": ({"M": 256, "N": 256, "K": 256}, {}, {"TILE_M": 64}),
    "matmul_blocked": ({"M": 256, "N": 512, "K": 256}, {}, {"TILES_IN_BLOCK_N": 2,
                                                             "TILE_N": 256}),
    "matmul": ({"M": 256, "N": 256, "K": 512}, {}, {"TILES_IN_BLOCK_K": 2, "TILE_N": 256}),
    "conv2d": ({"c_in": 32, "height": 8, "width": 8}, {"padding": 1}, {"TILE_N": 64}),
    "attention": ({"seq": 256, "head_dim": 64, "heads": 1}, {}, {"KV_TILE": 128}),
    "layernorm": ({"rows": 256, "cols": 512}, {}, {"APPLY_ENGINE": "scalar"}),
    "layernorm_naive": ({"rows": 256, "cols": 512}, {}, {"APPLY_ENGINE": "scalar"}),
    "softmax": ({"rows": 256, "cols": 512}, {}, {"NORMALIZE": "divide"}),
}


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("name", REQUIRED)
def test_a_workload_times_like_the_library_kernel_run_directly(name, machine):
    sizes, options, layout = CASES[name]
    entry = LIBRARY[name]
    # Directly: data arrays, trace, timing-only run.
    arrays = entry.inputs(sizes, options, dtype="bf16")
    program = trace(entry.kernel, *arrays, target=machine, **entry.kernel_kwargs(options, layout))
    direct = run(program, machine=machine, functional=False).report
    # As a sweep point: shapes only, through the workload table.
    point = Point(f"lib.{name}", machine, tuple({**sizes, **options, "dtype": "bf16"}.items()),
                  tuple(layout.items()))
    row = run_point(point, INSTANCES[machine])
    assert row["status"] == "ok", row["error"]
    assert row["latency_ns"] == direct.latency_ns
    assert row["tensor_hfu"] == direct.tensor_hfu
    assert row["flops"] == direct.flops
    assert isinstance(library_input_specs(entry, sizes, options, "bf16")[0], TensorSpec)
