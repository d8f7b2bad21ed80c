"""Machine presets and machine files: sources, consistency, TOML round trips, rejections."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from emulator.machine import (
    CORES,
    INFERENTIA,
    INFERENTIA2,
    INSTANCES,
    NEURONCORE_V1,
    NEURONCORE_V2,
    instance_spec,
)
from emulator.machine_file import (
    MachineFileError,
    dump_machine,
    load_machine,
    load_machine_text,
    machine,
    save_machine,
)
from emulator.runner import run
from isa import Engine
from kernels.programs import tiled_matmul

NUMBERS = [f.name for f in dataclasses.fields(NEURONCORE_V2)
           if f.name not in ("name", "target", "sources")]


@pytest.mark.parametrize("core", sorted(set(CORES.values()), key=lambda c: c.name),
                         ids=lambda c: c.name)
def test_every_core_number_has_a_source(core):
    missing = [n for n in NUMBERS + ["target"] if n not in core.sources
               and not (core is NEURONCORE_V1 and n.startswith("gpsimd_") and n != "gpsimd_ghz")]
    assert missing == []


def test_published_inf2_numbers():
    assert NEURONCORE_V2.tensor_peak_flops == pytest.approx(91.75e12, rel=1e-3)  # [A2] 92 TF
    assert NEURONCORE_V2.target.sbuf_partition_bytes * 128 == 24 * 2**20
    assert INFERENTIA2.cores == 2 and INFERENTIA2.hbm_gbps == 820.0


def test_inf1_preset_states_its_assumptions():
    assert NEURONCORE_V1.tensor_peak_flops == pytest.approx(16e12)  # [NC1] 16 TFLOPS per core
    assert Engine.GPSIMD not in NEURONCORE_V1.target.engines
    assert INFERENTIA.cores == 4 and INFERENTIA.hbm_bytes == 8 * 2**30
    assert INFERENTIA.hbm_gbps == pytest.approx(50 * 2**30 / 1e9)
    for name in ("pe_rows", "tensor_ghz", "target", "dma_engines"):
        assert "not public" in NEURONCORE_V1.sources[name] or "chosen" in \
            NEURONCORE_V1.sources[name]


def test_instances_and_prices():
    prices = {"inf2.xlarge": 0.76, "inf2.8xlarge": 1.97, "inf2.24xlarge": 6.49,
              "inf2.48xlarge": 12.98, "inf1.xlarge": 0.23, "inf1.24xlarge": 4.72}
    for name, price in prices.items():
        assert INSTANCES[name].price_per_hour == price
    assert INSTANCES["inf2.48xlarge"].topology == "ring" and INSTANCES["inf2.48xlarge"].chips == 12
    assert INSTANCES["inf2.24xlarge"].chips == 6
    assert INSTANCES["inf1.24xlarge"].topology == "chain"
    assert INSTANCES["trn1.32xlarge"].torus == (4, 4)
    assert instance_spec("inf2") is INSTANCES["inf2.xlarge"]
    with pytest.raises(ValueError, match="unknown instance 'inf3'"):
        instance_spec("inf3")


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_toml_round_trip_of_every_preset(name, tmp_path):
    preset = INSTANCES[name]
    path = tmp_path / f"{name}.toml"
    save_machine(preset, path)
    loaded = load_machine(path)
    assert loaded == preset
    assert loaded.chip.core.sources == preset.chip.core.sources
    assert dump_machine(loaded) == dump_machine(preset)


def test_what_if_file_overrides_only_what_it_names():
    half = load_machine_text('base = "inf2.xlarge"\n[chip]\nhbm_gbps = 410\n')
    assert half.chip.hbm_gbps == 410.0
    assert half.chip.core == INFERENTIA2.core and half.price_per_hour == 0.76


def test_smaller_array_is_slower_for_the_same_program():
    toy = load_machine_text(
        'base = "inf2.xlarge"\n[core]\npe_rows = 64\npe_cols = 64\n'
        'tensor_ghz = 2.8\n[core.target]\nmatmul_max_k = 64\nmatmul_max_m = 64\n')
    # Each machine runs the matmul tiled for its own array: 64x64 tiles need 4x the matmuls,
    # each still streaming N = 512 columns, so TensorE works 4x longer.
    small = run(tiled_matmul(256, 256, 512, "bf16", target=toy.chip.core.target),
                machine=toy, functional=False).report
    full = run(tiled_matmul(256, 256, 512, "bf16"), machine="inf2", functional=False).report
    small_busy = small.cores[0].engines["tensor"].busy_ns
    assert small_busy == pytest.approx(4 * full.cores[0].engines["tensor"].busy_ns)
    assert small.latency_ns > full.latency_ns


@pytest.mark.parametrize("text, match", [
    ('base = "inf2"\n[chip]\nhbm_gbps = -1.0\n', r"hbm_gbps=-1.0 must be > 0"),
    ('base = "inf2"\n[instance]\nlink_gbps = -5\n', r"link_gbps=-5.0 must be > 0"),
    ('base = "inf2"\n[core.target]\nsbuf_bytes = 1000\n',
     r"core.target.sbuf_bytes = 1000 is not divisible by core.target.partitions = 128"),
    ('base = "inf2"\n[core]\nwarp_speed = 9\n', r"unknown key core.warp_speed"),
    ('base = "inf2"\nextra = 1\n', r"unknown key extra"),
    ('base = "inf2"\n[core]\ntensor_ghz = "fast"\n', r"core.tensor_ghz = 'fast': expected float"),
    ('base = "inf2"\n[core]\npe_rows = 64\n', r"matmul limits K<=128, M<=128 exceed the 64x128"),
    ('base = "inf2"\n[core.target]\nengines = ["tensor", "warp"]\n', r"core.target.engines"),
    ('base = "inf2"\n[instance]\ntopology = "ring"\n', r"topology 'ring' does not fit 1 chip"),
    ('[chip]\ncores = 2\n', r"missing \[core\], \[instance\]"),
    ('base = [\n', r"not valid TOML"),
])
def test_bad_machine_files_are_rejected_naming_the_key(text, match):
    with pytest.raises(MachineFileError, match=match):
        load_machine_text(text)


def test_machine_resolves_names_and_files(tmp_path):
    assert machine("inf1") is INSTANCES["inf1.xlarge"]
    with pytest.raises(MachineFileError, match="no machine file"):
        machine(tmp_path / "missing.toml")


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("machines/*.toml")),
                         ids=lambda p: p.stem)
def test_shipped_machine_files_load_and_run(path):
    instance = load_machine(path)
    assert instance.name == path.stem
    program = tiled_matmul(256, 128, 512, "bf16", target=instance.chip.core.target)
    report = run(program, machine=path, functional=False).report
    assert report.machine.startswith(path.stem) and report.latency_ns > 0


def test_lower_hbm_bandwidth_slows_a_bandwidth_bound_program():
    # A 100 GB/s HBM binds before the DMA engines' 16 x 17 B/ns = 272 B/ns.
    slow = load_machine_text('base = "inf2"\n[chip]\nhbm_gbps = 100.0\n')
    program = tiled_matmul(512, 128, 1024, "bf16")
    base = run(program, machine="inf2", functional=False).report
    starved = run(program, machine=slow, functional=False).report
    hbm_bytes = sum(starved.cores[0].memory[k] for k in ("hbm_read_bytes", "hbm_write_bytes"))
    assert starved.latency_ns > base.latency_ns
    assert starved.latency_ns >= hbm_bytes / 100.0
