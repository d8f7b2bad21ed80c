"""Tests of the SCALE-Sim-compatible model (emulator/scalesim.py).

Report items equal SCALE-Sim 3.0.0's own numbers, written below as literals; the fold cycle
arithmetic is spelled out on small cases; the topology reader parses both formats and rejects
malformed lines; the result matrix equals numpy and our PE-level array, whose fold cycles relate
to SCALE-Sim's by the per-fold offsets the module documents.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from emulator.scalesim import (
    MODES,
    REPORT_COLUMNS,
    ConvLayer,
    GemmLayer,
    ScaleSimConfig,
    compute,
    cycles_from_pe,
    filter_addresses,
    fold_plan,
    ifmap_addresses,
    operand_matrices,
    parse_topology,
    pe_fold_offsets,
    pe_operands,
    read_topology,
    schedule,
    simulate_layer,
)
from emulator.systolic import SystolicArray, simulate

# ---- SCALE-Sim 3.0.0's numbers ----------------------------------------------------------------
# Obtained with `pip install scalesim==3.0.0 "numpy<2.4"` in a separate venv and
#     python -m scalesim.scale -c CFG -t TOPOLOGY -l LAYOUT -p OUT -i {gemm|conv} -s N
# where CFG is benchmarks/scalesim_compare.py's scalesim_cfg() (InterfaceBandwidth CALC, no
# ramulator, no sparsity, no custom layout) with the array, dataflow and the three SRAM sizes
# below, LAYOUT a header-only file, and the items read from OUT/run/COMPUTE_REPORT.csv and
# DETAILED_ACCESS_REPORT.csv.  Tuples follow REPORT_COLUMNS: total cycles incl. prefetch, total
# cycles, stall cycles, overall util %, mapping efficiency %, compute util %, SRAM ifmap/filter
# reads, SRAM ofmap writes, DRAM ifmap/filter reads, DRAM ofmap writes.
LAYERS = {
    "g1": GemmLayer("g1", 20, 12, 10),
    "g2": GemmLayer("g2", 64, 48, 40),
    "g3": GemmLayer("g3", 5, 3, 7),
    "c1": ConvLayer("c1", 9, 9, 3, 3, 2, 5, 2),
    "c2": ConvLayer("c2", 6, 7, 2, 3, 3, 4, 1),
    "c3": ConvLayer("c3", 24, 20, 3, 3, 8, 12, 2),
    "gemm512": GemmLayer("gemm512", 512, 512, 512),
    "conv1": ConvLayer("conv1", 224, 224, 7, 7, 3, 64, 2),
    "res4_1x1": ConvLayer("res4_1x1", 14, 14, 1, 1, 1024, 256, 1),
    "odd": ConvLayer("odd", 37, 29, 5, 3, 7, 19, 3),
}
# (layer, mode, rows, cols, kB of each SRAM) -> SCALE-Sim's report items.  The 1 kB SRAMs make
# the read buffers forget (10-word sets, 500-word epochs) and the ofmap buffer drain mid-layer.
SCALESIM = {
    ("g1", "ws", 8, 8, 1): (246, 167, 0, 22.45508982035928, 46.875, 19.13265306122449,
                            400, 120, 480, 200, 120, 480),
    ("g2", "ws", 8, 8, 1): (2693, 2579, 0, 74.44746025591314, 100.0, 68.81720430107524,
                            15360, 1920, 15360, 15360, 1920, 15367),
    ("g3", "ws", 8, 8, 1): (31, 26, 0, 6.310096153846154, 32.8125, 4.825367647058823,
                            35, 21, 15, 35, 21, 15),
    ("c1", "ws", 8, 8, 1): (159, 113, 0, 19.911504424778762, 46.875, 16.666666666666664,
                            288, 90, 240, 162, 90, 240),
    ("c2", "ws", 8, 8, 1): (190, 140, 0, 20.089285714285715, 37.5, 17.361111111111114,
                            450, 72, 300, 126, 72, 300),
    ("c3", "ws", 8, 8, 1): (2625, 2555, 0, 63.40508806262231, 75.0, 60.40268456375841,
                            17280, 864, 12960, 16240, 864, 12967),
    ("g1", "os", 8, 8, 1): (192, 143, 0, 26.223776223776223, 62.5, 26.041666666666668,
                            400, 360, 336, 200, 120, 240),
    ("g2", "os", 8, 8, 1): (2705, 2591, 0, 74.10266306445388, 100.0, 74.07407407407406,
                            15360, 15360, 3840, 15360, 2820, 3079),
    ("g3", "os", 8, 8, 1): (25, 20, 0, 8.203125, 23.4375, 7.8125, 35, 21, 31, 35, 21, 15),
    ("c1", "os", 8, 8, 1): (89, 63, 0, 35.714285714285715, 62.5, 35.15625,
                            288, 180, 112, 162, 90, 80),
    ("c2", "os", 8, 8, 1): (152, 127, 0, 22.14566929133858, 39.0625, 21.97265625,
                            450, 288, 164, 126, 72, 100),
    ("c3", "os", 8, 8, 1): (2681, 2579, 0, 62.81504459092672, 75.0, 62.79069767441864,
                            17280, 12960, 1920, 9623, 8928, 1447),
    ("g1", "is", 8, 8, 1): (282, 203, 0, 18.472906403940886, 52.083333333333336,
                            15.24390243902439, 200, 360, 480, 200, 120, 480),
    ("g2", "is", 8, 8, 1): (2913, 2799, 0, 68.59592711682744, 100.0, 62.337662337662294,
                            2560, 15360, 15360, 2560, 15360, 15367),
    ("g3", "is", 8, 8, 1): (29, 24, 0, 6.8359375, 54.6875, 5.126953125, 35, 21, 15, 35, 21, 15),
    ("c1", "is", 8, 8, 1): (207, 161, 0, 13.975155279503106, 75.0, 11.029411764705882,
                            288, 180, 240, 162, 90, 240),
    ("c2", "is", 8, 8, 1): (361, 311, 0, 9.043408360128618, 58.59375, 7.102272727272727,
                            450, 288, 300, 126, 72, 300),
    ("c3", "is", 8, 8, 1): (4659, 4589, 0, 35.30180867291349, 100.0, 29.268292682926784,
                            8640, 12960, 12960, 4856, 12960, 12967),
    # 64 kB (SCALE-Sim's configs/scale.cfg): nothing is forgotten on these small layers.
    ("g1", "ws", 8, 8, 64): (292, 167, 0, 22.45508982035928, 46.875, 19.13265306122449,
                             400, 120, 480, 200, 120, 480),
    ("c1", "os", 8, 8, 64): (138, 63, 0, 35.714285714285715, 62.5, 35.15625,
                             288, 180, 112, 162, 90, 80),
    ("c2", "is", 8, 8, 64): (414, 311, 0, 9.043408360128618, 58.59375, 7.102272727272727,
                             450, 288, 300, 126, 72, 300),
    # The benchmark's layers, 64 kB: the ifmap outgrows one 32750-word epoch.
    ("gemm512", "ws", 128, 128, 64): (17834, 14303, 0, 57.27469761588478, 100.0,
                                      50.146914789422134, 1048576, 262144, 1048576, 1048576,
                                      262144, 1048703),
    ("conv1", "ws", 128, 128, 64): (28178, 24963, 0, 27.83338090373753, 28.7109375,
                                    27.55193463002617, 1778700, 9408, 1548800, 231566, 9408,
                                    1548927),
    ("res4_1x1", "ws", 32, 32, 64): (78538, 74239, 0, 67.58711728336858, 100.0,
                                     61.05919003115303, 1605632, 262144, 1605632, 1605632,
                                     262144, 1605663),
    ("gemm512", "os", 128, 128, 64): (15786, 12255, 0, 66.84618523051816, 100.0,
                                      66.84073107049608, 1048576, 1048576, 266240, 1048576,
                                      1048576, 262271),
    ("gemm512", "is", 128, 128, 64): (17834, 14303, 0, 57.27469761588478, 100.0,
                                      50.146914789422134, 262144, 1048576, 1048576, 262144,
                                      1048576, 1048703),
    ("res4_1x1", "os", 32, 32, 64): (64634, 60815, 0, 82.50596070048508, 87.5,
                                     82.50460405156534, 1605632, 1835008, 53760, 1605632,
                                     1835008, 50207),
    ("res4_1x1", "is", 32, 32, 64): (82698, 78399, 0, 64.00081633694307, 87.5,
                                     58.792650918635516, 200704, 1835008, 1605632, 200704,
                                     1835008, 1605663),
    # A non-square array and a stride that leaves the last window hanging over the edge.
    ("odd", "ws", 16, 8, 64): (6097, 3317, 0, 56.38566475731082, 74.21875, 53.97727272727275,
                               37800, 1995, 15960, 7511, 1995, 15960),
    ("odd", "os", 16, 8, 64): (4117, 3047, 0, 61.382097144732526, 74.21875, 61.36195866141735,
                               37800, 15960, 2856, 7511, 1995, 2280),
    ("odd", "is", 16, 8, 64): (8764, 5984, 0, 31.255222259358288, 93.75, 27.83203125,
                               12600, 29925, 15960, 7511, 1995, 15960),
}


@pytest.mark.parametrize("case", sorted(SCALESIM), ids=lambda c: "-".join(map(str, c)))
def test_report_equals_scalesim(case: tuple) -> None:
    name, flow, rows, cols, kb = case
    report = schedule(LAYERS[name], ScaleSimConfig(rows, cols, f"scalesim-{flow}", kb, kb, kb))
    for item, expected in zip(REPORT_COLUMNS, SCALESIM[case]):
        if item.endswith("_pct"):
            # SCALE-Sim averages fold by fold; the closed form rounds differently.
            assert getattr(report, item) == pytest.approx(expected, rel=1e-12), item
        else:
            assert getattr(report, item) == expected, item


# ---- fold arithmetic ----------------------------------------------------------------------------


def test_fold_cycles_spelled_out() -> None:
    # GEMM M=20 N=12 K=10 on 8x8.  ws: Sr=K=10, Sc=N=12, T=M=20: 2 x 2 folds of
    # 2*8 + 8 + 20 - 2 = 42 cycles; Total Cycles is the last cycle's index: 4 * 42 - 1 = 167.
    g1 = LAYERS["g1"]
    assert schedule(g1, ScaleSimConfig(8, 8, "scalesim-ws")).total_cycles == 167
    # os: Sr=M=20 -> 3 row folds, Sc=N=12 -> 2, T=K=10: 6 * (8 + 8 + 10 - 2) - 1 = 143.
    assert schedule(g1, ScaleSimConfig(8, 8, "scalesim-os")).total_cycles == 143
    # is: Sr=K=10 -> 2, Sc=M=20 -> 3, T=N=12: 6 * (2*8 + 8 + 12 - 2) - 1 = 203.
    assert schedule(g1, ScaleSimConfig(8, 8, "scalesim-is")).total_cycles == 203
    # A 6 x 7 ifmap under a 2 x 3 filter, stride 1: 5 x 5 = 25 pixels, K = 2*3*3 = 18.
    plan = fold_plan(LAYERS["c2"], ScaleSimConfig(8, 8, "scalesim-ws"))
    assert (plan.m, plan.n, plan.k, plan.row_folds, plan.col_folds) == (25, 4, 18, 3, 1)
    assert plan.rows_used.tolist() == [8, 8, 2]


def test_conv_output_size_uses_scalesims_ceiling() -> None:
    # ResNet-50 conv1 in SCALE-Sim's topology: ceil((224 - 7 + 2) / 2) = 110, not 112.
    conv1 = LAYERS["conv1"]
    assert (conv1.ofmap_h, conv1.ofmap_w, conv1.mnk) == (110, 110, (12100, 64, 147))
    # ... so the last output row's window reaches row 218 + 6 = 224, one past the ifmap.
    assert (ifmap_addresses(conv1)[-1] == -1).sum() == 7 * 7 * 3 - 6 * 6 * 3


def test_dram_reads_are_distinct_addresses_when_nothing_is_forgotten() -> None:
    # With 64 kB the read buffers never forget on these layers: DRAM reads = distinct addresses.
    for name in ("g1", "g2", "c1", "c2", "c3"):
        for mode in MODES:
            report = schedule(LAYERS[name], ScaleSimConfig(8, 8, mode))
            ifmap = ifmap_addresses(LAYERS[name])
            assert report.ifmap_dram_reads == np.unique(ifmap[ifmap >= 0]).size
            assert report.filter_dram_reads == filter_addresses(LAYERS[name]).size


# ---- topology CSVs ------------------------------------------------------------------------------

GEMM_CSV = "Layer, M, N, K,\ng1, 20, 12, 10,\n\ng2, 64,48,40\ng3, 5, 3, 7,,,\n"
CONV_CSV = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
            "Num Filter, Strides,\nc1, 9, 9, 3, 3, 2, 5, 2,\nc2,6,7,2,3,3,4,1\n")


def test_reads_both_formats_with_and_without_trailing_commas() -> None:
    assert parse_topology(GEMM_CSV) == (LAYERS["g1"], LAYERS["g2"], LAYERS["g3"])
    assert parse_topology(CONV_CSV) == (LAYERS["c1"], LAYERS["c2"])
    assert parse_topology("x,\nc1, 9, 9, 3, 3, 2, 5, 2,", kind="conv") == (LAYERS["c1"],)


def test_reads_the_benchmark_layer_files() -> None:
    from benchmarks.scalesim_compare import LAYER_FILES

    gemms = read_topology(LAYER_FILES["gemm"])
    convs = read_topology(LAYER_FILES["conv"])
    assert [g.mnk for g in gemms] == [(512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
                                      (2048, 4096, 1024)]
    assert convs[0] == LAYERS["conv1"] and [c.mnk for c in convs[1:]] == [
        (54 * 54, 64, 576), (196, 256, 1024), (25, 512, 4608)]


def test_depthwise_layers_split_per_channel_as_scalesim_does() -> None:
    layers = parse_topology(CONV_CSV.splitlines()[0] + "\nDP1, 8, 8, 3, 3, 3, 1, 1,\n")
    assert [layer.name for layer in layers] == ["DP1Channel_0", "DP1Channel_1", "DP1Channel_2"]
    assert {layer.channels for layer in layers} == {1}


@pytest.mark.parametrize(("text", "kind", "match"), [
    ("Layer, M, N, K,\ng1, 20, x, 10,", None, r"<text>:2: column 3 \(N\) must be a positive "
                                              r"integer, got 'x'"),
    ("Layer, M, N, K,\ng1, 20, 0, 10,", None, r":2: column 3 \(N\)"),
    ("Layer, M, N, K,\n\ng1, 20, 1.5, 10,", None, r":3: column 3 \(N\).*'1.5'"),
    ("Layer, M, N, K,\ng1, 20, 12,", None, r":2: expected 4 fields .*got 3"),
    ("Layer, M, N, K,\ng1, 20, 12, 10, 1:2,", None, r":2: expected 4 fields .*got 5"),
    ("Layer, M, N, K,\n, 20, 12, 10,", None, r":2: column 1 \(layer name\) is empty"),
    ("Layer, A, B,\ng1, 1, 2,", None, r":1: cannot tell the topology kind"),
    ("", None, r":1: empty topology"),
    ("Layer, M, N, K,\ng1, 1, 2, 3,", "fc", r"unknown topology kind 'fc'"),
    (CONV_CSV.splitlines()[0] + "\nc9, 4, 4, 5, 3, 1, 1, 1,", None,
     r":2: layer 'c9': filter 5x3 exceeds ifmap 4x4"),
])
def test_rejects_malformed_topologies(text: str, kind: str | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_topology(text, kind)


def test_read_topology_names_the_file(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("Layer, M, N, K,\ng1, 20, twelve, 10,\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2: column 3"):
        read_topology(path)


# ---- records that check themselves --------------------------------------------------------------


@pytest.mark.parametrize(("make", "error", "match"), [
    (lambda: ScaleSimConfig(0, 8), ValueError, r"rows=0 must be >= 1"),
    (lambda: ScaleSimConfig(8, 8, "ws"), ValueError, r"unknown mode 'ws'"),
    (lambda: ScaleSimConfig(8, 8.0), TypeError, r"cols must be an int"),
    (lambda: GemmLayer("g", 4, 0, 4), ValueError, r"layer 'g': n=0 must be >= 1"),
    (lambda: ConvLayer("c", 3, 3, 3, 4, 1, 1), ValueError, r"filter 3x4 exceeds ifmap 3x3"),
])
def test_records_reject_illegal_values(make, error, match) -> None:
    with pytest.raises(error, match=match):
        make()


def test_operands_must_be_float32_of_the_layers_shape() -> None:
    config = ScaleSimConfig(8, 8)
    with pytest.raises(TypeError, match=r"ifmap must be float32, got float64"):
        compute(LAYERS["g3"], config, np.zeros((5, 7)), np.zeros((7, 3), np.float32))
    with pytest.raises(ValueError, match=r"filters has shape \(3, 7\), expected \(7, 3\)"):
        compute(LAYERS["g3"], config, np.zeros((5, 7), np.float32), np.zeros((3, 7), np.float32))
    with pytest.raises(ValueError, match=r"filters has shape .* expected \(5, 3, 3, 2\)"):
        compute(LAYERS["c1"], config, np.zeros((9, 9, 2), np.float32),
                np.zeros((3, 3, 2, 5), np.float32))


def test_a_one_cycle_schedule_fails_as_scalesim_does() -> None:
    # os on a 1x1 array, M = N = K = 1: one fold of 1 + 1 + 1 - 2 = 1 cycle, Total Cycles 0.
    with pytest.raises(ValueError, match=r"one-cycle schedule has Total Cycles 0"):
        schedule(GemmLayer("g", 1, 1, 1), ScaleSimConfig(1, 1, "scalesim-os"))


def test_cycles_from_pe_rejects_a_run_of_other_folds() -> None:
    config = ScaleSimConfig(8, 8, "scalesim-ws")
    other = simulate(SystolicArray(4, 4, "ws"), np.ones((10, 12), np.float32),
                     np.ones((10, 20), np.float32))
    with pytest.raises(ValueError, match=r"PE run has 9 folds, SCALE-Sim's plan 4"):
        cycles_from_pe(other, LAYERS["g1"], config)


# ---- the result matrix --------------------------------------------------------------------------


def small_ints(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # Small integers keep every fp32 partial sum exact, so any summation order agrees bit for bit.
    return rng.integers(-4, 5, shape).astype(np.float32)


def direct_convolution(ifmap: np.ndarray, filters: np.ndarray, stride: int) -> np.ndarray:
    """A plain sliding window over an ifmap zero-padded at the bottom and right, [E_h*E_w, N]."""
    h, w, _ = ifmap.shape
    n, r, s, _ = filters.shape
    e_h, e_w = -(-(h - r + stride) // stride), -(-(w - s + stride) // stride)
    padded = np.zeros(((e_h - 1) * stride + r, (e_w - 1) * stride + s, ifmap.shape[2]))
    padded[:h, :w] = ifmap
    out = np.zeros((e_h, e_w, n))
    for i in range(e_h):
        for j in range(e_w):
            window = padded[i * stride:i * stride + r, j * stride:j * stride + s]
            out[i, j] = np.einsum("rsc,nrsc->n", window, filters)
    return out.reshape(e_h * e_w, n)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["c1", "c2", "c3"])
def test_conv_result_equals_a_direct_convolution(mode: str, name: str) -> None:
    conv = LAYERS[name]
    rng = np.random.default_rng(1)
    ifmap = small_ints(rng, (conv.ifmap_h, conv.ifmap_w, conv.channels))
    filters = small_ints(rng, (conv.filters, conv.filter_h, conv.filter_w, conv.channels))
    result = simulate_layer(conv, ScaleSimConfig(8, 8, mode), ifmap, filters)
    assert np.array_equal(result.output, direct_convolution(ifmap, filters, conv.stride))
    assert result.report == schedule(conv, ScaleSimConfig(8, 8, mode))


def test_random_float_result_is_numpy_to_fp32_rounding() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((70, 300)).astype(np.float32)
    b = rng.standard_normal((300, 40)).astype(np.float32)
    for mode in MODES:
        out = compute(GemmLayer("g", 70, 40, 300), ScaleSimConfig(32, 16, mode), a, b)
        np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


@st.composite
def gemm_cases(draw) -> tuple[GemmLayer, ScaleSimConfig, int]:
    layer = GemmLayer("h", draw(st.integers(1, 24)), draw(st.integers(1, 24)),
                      draw(st.integers(1, 24)))
    config = ScaleSimConfig(draw(st.integers(1, 9)), draw(st.integers(1, 9)),
                            draw(st.sampled_from(sorted(MODES))))
    # The one schedule SCALE-Sim cannot report (see test_a_one_cycle_schedule_fails...).
    assume(not (config.mode == "scalesim-os" and config.rows == config.cols == layer.k
                == layer.m == layer.n == 1))
    return layer, config, draw(st.integers(0, 2**32 - 1))


@given(gemm_cases())
def test_result_and_cycles_agree_with_the_pe_array(case) -> None:
    layer, config, seed = case
    rng = np.random.default_rng(seed)
    a, b = small_ints(rng, (layer.m, layer.k)), small_ints(rng, (layer.k, layer.n))
    result = simulate_layer(layer, config, a, b)
    assert np.array_equal(result.output, a @ b)

    array, stationary, moving, transposed = pe_operands(config, *operand_matrices(layer, a, b))
    pe = simulate(array, stationary, moving)
    assert np.array_equal(pe.output.T if transposed else pe.output, result.output)
    # Fold by fold: SCALE-Sim's cycles = the PE model's + the documented offset; in total, minus
    # one for SCALE-Sim counting cycle indices (and no stalls on these layers).
    offsets = pe_fold_offsets(layer, config)
    assert (np.asarray(pe.fold_cycles) + offsets == result.report.fold_cycles).all()
    assert result.report.stall_cycles == 0
    assert cycles_from_pe(pe, layer, config) == result.report.total_cycles


# ---- the comparison benchmark's SCALE-Sim inputs -------------------------------------------------


def test_benchmark_writes_topologies_that_read_back() -> None:
    from benchmarks.scalesim_compare import topology_line

    for layer in (LAYERS["g2"], LAYERS["odd"]):
        header, line = topology_line(layer)
        assert line.endswith(",") and parse_topology(f"{header}\n{line}\n") == (layer,)


def test_benchmark_config_has_every_key_scalesim_reads() -> None:
    import configparser

    from benchmarks.scalesim_compare import scalesim_cfg

    cfg = configparser.ConfigParser()
    cfg.read_string(scalesim_cfg(ScaleSimConfig(16, 8, "scalesim-is", 2, 4, 8)))
    # The keys scale_config.read_conf_file of 3.0.0 reads unconditionally.
    arch = cfg["architecture_presets"]
    assert (arch["ArrayHeight"], arch["ArrayWidth"], arch["Dataflow"]) == ("16", "8", "is")
    assert (arch["IfmapSramSzkB"], arch["FilterSramSzkB"], arch["OfmapSramSzkB"]) == ("2", "4",
                                                                                    "8")
    assert cfg["run_presets"]["InterfaceBandwidth"] == "CALC"
    for section, key in (("general", "run_name"), ("run_presets", "UseRamulatorTrace"),
                         ("layout", "IfmapCustomLayout"), ("layout", "FilterSRAMBankPort"),
                         ("sparsity", "SparsitySupport"), ("architecture_presets",
                                                           "WriteRequestBuffer")):
        assert key in cfg[section]
