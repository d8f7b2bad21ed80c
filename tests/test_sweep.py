"""Sweeps: the workload registry, spec checking, process pool vs Dask, resuming, `ncemu bench`."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator import sweep
from emulator.cli import main
from emulator.runner import run
from emulator.sweep import (
    RESULT_COLUMNS,
    Progress,
    SpecError,
    SweepError,
    load_results,
    load_spec,
    parse_spec,
    run_sweep,
)
from emulator.workloads import workload
from isa import INF2
from kernels.programs import tiled_matmul

HALF_HBM = """base = "inf2.xlarge"
[chip]
hbm_gbps = 410.0
"""

# 2 machines x 3 tile widths x 2 buffer counts = 12 points; tile_n = 384 does not divide
# n = 512, so its 4 points are errors.
SPEC = """[sweep]
name = "small"
workload = "matmul"
machines = ["inf2", "half-hbm.toml"]
[sweep.shape]
m = [128]
k = [128]
n = [512]
[sweep.layout]
tile_n = [128, 384, 512]
buffers = [1, 2]
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    (tmp_path / "half-hbm.toml").write_text(HALF_HBM)
    path = tmp_path / "small.toml"
    path.write_text(SPEC)
    return path


def ids_in(path: Path) -> list[str]:
    with open(path, newline="") as results:
        return [row["id"] for row in csv.DictReader(results)]


def without_wall_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "emulation_s"} for row in rows]


# --- the workload registry ------------------------------------------------------------------

def test_matmul_workload_builds_the_tiled_matmul_with_defaults():
    wl = workload("matmul")
    program = wl.program({"m": 256}, {"tile_n": 256}, INF2)
    expected = tiled_matmul(256, 512, 1024, "bf16", tile_n=256, buffers=2)
    assert program.name == expected.name
    assert program.instruction_count == expected.instruction_count


def test_workload_errors_name_the_workload_or_parameter():
    with pytest.raises(ValueError, match=r"unknown workload 'conv'; known workloads: matmul"):
        workload("conv")
    with pytest.raises(ValueError, match=r"no shape parameter 'q'; its shape parameters: "
                                         r"m, k, n, dtype"):
        workload("matmul").resolve("shape", {"q": 1})
    with pytest.raises(ValueError, match=r"layout.buffers = '2': expected int"):
        workload("matmul").resolve("layout", {"buffers": "2"})
    with pytest.raises(ValueError, match=r"shape.dtype = 'bf17': must be one of"):
        workload("matmul").resolve("shape", {"dtype": "bf17"})


# --- the spec -------------------------------------------------------------------------------

def test_points_fill_defaults_and_have_stable_ids(spec_file):
    spec = load_spec(spec_file)
    points = spec.points()
    assert len(points) == 12 and len({p.id for p in points}) == 12
    assert {p.machine for p in points} == {"inf2.xlarge", "half-hbm.toml"}
    assert dict(points[0].shape) == {"m": 128, "k": 128, "n": 512, "dtype": "bf16"}
    # The alias and the canonical name, defaults given or not: the same point, the same id.
    explicit = parse_spec({"sweep": {"workload": ["matmul"], "machines": ["inf2.xlarge"],
                                     "shape": {"m": [128], "k": [128], "n": [512],
                                               "dtype": ["bf16"]},
                                     "layout": {"tile_n": [128], "buffers": [1]}}})
    assert explicit.points()[0].id == points[0].id
    # A machine file's text is part of its points' identity.
    (spec_file.parent / "half-hbm.toml").write_text(HALF_HBM.replace("410.0", "400.0"))
    changed = {p.id for p in load_spec(spec_file).points()}
    assert len(changed & {p.id for p in points}) == 6


BAD_SPECS = [
    ('[sweep]\nworkload = "matmul"\nmachines = ["inf2"]\nseed = 1\n', r"unknown key sweep\.seed"),
    ('[run]\nx = 1\n[sweep]\nworkload = "matmul"\nmachines = ["inf2"]\n',
     r"unknown top-level key run"),
    ('[sweep]\nworkload = "conv"\nmachines = ["inf2"]\n',
     r"sweep\.workload\[0\]: unknown workload 'conv'; known workloads: matmul"),
    ('[sweep]\nworkload = "matmul"\nmachines = ["inf2"]\n[sweep.shape]\nm = 512\n',
     r"sweep\.shape\.m = 512: expected a list"),
    ('[sweep]\nworkload = "matmul"\nmachines = "inf2"\n',
     r"sweep\.machines = 'inf2': expected a list"),
    ('[sweep]\nworkload = "matmul"\n', r"missing key sweep\.machines"),
    ('[sweep]\nmachines = ["inf2"]\n', r"missing key sweep\.workload"),
    ('[sweep]\nworkload = "matmul"\nmachines = []\n', r"sweep\.machines is empty"),
    ('[sweep]\nworkload = "matmul"\nmachines = ["inf9"]\n',
     r"sweep\.machines\[0\] = 'inf9': unknown instance"),
    ('[sweep]\nworkload = "matmul"\nmachines = ["nowhere.toml"]\n',
     r"sweep\.machines\[0\] = 'nowhere\.toml': no machine file"),
    ('[sweep]\nworkload = "matmul"\nmachines = ["inf2"]\n[sweep.shape]\ntile_n = [128]\n',
     r"unknown key sweep\.shape\.tile_n \(tile_n is a layout parameter\)"),
    ('[sweep]\nworkload = "matmul"\nmachines = ["inf2"]\n[sweep.layout]\nbuffers = [2, "4"]\n',
     r"sweep\.layout\.buffers\[1\] = '4': expected int"),
    ('[sweep]\nworkload = "matmul"\nmachines = ["inf2"]\n[sweep.layout]\nbuffers = []\n',
     r"sweep\.layout\.buffers is empty"),
    ('[sweep]\nworkload = "matmul"\nmachines = ["inf2"]\nshape = [1]\n',
     r"sweep\.shape must be a table"),
    ("[sweep\n", r"not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SPECS)
def test_bad_specs_are_rejected_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_cli_reports_a_bad_spec(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(BAD_SPECS[0][0])
    assert main(["sweep", str(path)]) == 1
    assert "unknown key sweep.seed" in capsys.readouterr().err


# --- running: process pool and Dask, the same rows ------------------------------------------

def test_process_pool_and_dask_give_the_same_rows(spec_file, tmp_path):
    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed is not installed (pip install 'ncemu[sweep]')")
    pool_csv, dask_csv = tmp_path / "pool.csv", tmp_path / "dask.csv"
    summary = run_sweep(spec_file, pool_csv, workers=2, progress=None)
    assert (summary.total, summary.computed, summary.failed, summary.skipped) == (12, 12, 4, 0)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        summary = run_sweep(spec_file, dask_csv, scheduler=cluster.scheduler_address,
                            progress=None)
    assert (summary.computed, summary.failed) == (12, 4)
    pool_rows, dask_rows = load_results(pool_csv), load_results(dask_csv)
    assert [r["id"] for r in pool_rows] == sorted(r["id"] for r in pool_rows)
    assert without_wall_time(pool_rows) == without_wall_time(dask_rows)

    failed = [r for r in pool_rows if r["status"] == "error"]
    assert {r["tile_n"] for r in failed} == {384} and len(failed) == 4
    assert all("N=512 must be a positive multiple of its tile size 384" in r["error"]
               for r in failed)
    assert all(r["latency_ns"] is None for r in failed)
    # A row holds what a direct timing-only run of the same point reports.
    row = next(r for r in pool_rows if r["machine"] == "inf2.xlarge" and r["tile_n"] == 128
               and r["buffers"] == 2)
    report = run(tiled_matmul(128, 128, 512, tile_n=128, buffers=2), functional=False).report
    assert row["latency_ns"] == report.latency_ns
    assert row["tensor_hfu"] == report.tensor_hfu
    assert row["util_tensor"] == report.cores[0].engines["tensor"].utilization
    assert row["util_gpsimd"] == 0.0
    assert row["hbm_read_bytes"] == (128 * 128 + 128 * 512) * 2
    assert row["hbm_write_bytes"] == 128 * 512 * 4
    assert row["status"] == "ok" and row["error"] == ""


def test_an_unreachable_scheduler_is_an_error(spec_file, tmp_path):
    dask = pytest.importorskip(
        "dask", reason="dask.distributed is not installed (pip install 'ncemu[sweep]')")
    pytest.importorskip("distributed", reason="dask.distributed is not installed")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(SweepError, match=r"cannot reach the Dask scheduler at "
                                            r"tcp://127\.0\.0\.1:9"):
        run_sweep(spec_file, tmp_path / "r.csv", scheduler="tcp://127.0.0.1:9", progress=None)


def test_a_scheduler_without_dask_installed_says_what_to_install(spec_file, tmp_path,
                                                                monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now fails
    with pytest.raises(SweepError, match=r"needs dask\.distributed: pip install 'ncemu\[sweep\]'"):
        run_sweep(spec_file, tmp_path / "r.csv", scheduler="tcp://127.0.0.1:9", progress=None)


def test_a_point_the_executor_cannot_run_stops_the_sweep(spec_file, tmp_path, monkeypatch):
    # A lambda cannot be pickled to a worker process: the future fails, not the point.
    monkeypatch.setattr(sweep, "run_point", lambda point, instance: {})
    output = tmp_path / "results.csv"
    with pytest.raises(SweepError, match=r"could not run \(.*pickle.*\); 0 results saved in "
                                         r".*results\.csv, rerun to resume"):
        run_sweep(spec_file, output, workers=1, progress=None)
    assert ids_in(output) == []


def test_a_limited_sweep_resumes_with_only_the_missing_points(spec_file, tmp_path):
    output = tmp_path / "results.csv"
    first = run_sweep(spec_file, output, workers=1, limit=5, progress=None)
    assert (first.computed, first.skipped) == (5, 0)
    assert len(ids_in(output)) == 5
    second = run_sweep(spec_file, output, workers=1, progress=None)
    assert (second.computed, second.skipped) == (7, 5)
    ids = ids_in(output)
    assert sorted(ids) == sorted({p.id for p in load_spec(spec_file).points()})
    assert len(ids) == len(set(ids)) == 12
    third = run_sweep(spec_file, output, workers=1, progress=None)
    assert (third.computed, third.skipped) == (0, 12)


def test_failed_points_are_kept_unless_retried(spec_file, tmp_path):
    output = tmp_path / "results.csv"
    run_sweep(spec_file, output, workers=1, progress=None)
    retried = run_sweep(spec_file, output, workers=1, retry_failed=True, progress=None)
    assert (retried.computed, retried.failed, retried.skipped) == (4, 4, 8)
    ids = ids_in(output)
    assert len(ids) == len(set(ids)) == 12


def test_a_torn_last_row_is_recomputed(spec_file, tmp_path):
    output = tmp_path / "results.csv"
    run_sweep(spec_file, output, workers=1, limit=3, progress=None)
    whole = output.read_text()
    output.write_text(whole[:-20])  # the kill came in the middle of the third row
    summary = run_sweep(spec_file, output, workers=1, progress=None)
    assert (summary.skipped, summary.computed) == (2, 10)
    assert len(set(ids_in(output))) == len(ids_in(output)) == 12


def test_results_of_another_sweep_are_not_appended_to(spec_file, tmp_path):
    output = tmp_path / "results.csv"
    output.write_text("id,something,else\n")
    with pytest.raises(SweepError, match="holds the results of another sweep"):
        run_sweep(spec_file, output, workers=1, progress=None)
    summary = run_sweep(spec_file, output, workers=1, limit=1, resume=False, progress=None)
    assert summary.computed == 1 and len(ids_in(output)) == 1


def test_a_killed_sweep_command_resumes(spec_file, tmp_path):
    # Larger points than the other tests, so that the kill lands before the sweep ends.
    spec_file.write_text(SPEC.replace("m = [128]", "m = [1024]").replace("k = [128]",
                                                                          "k = [1024]"))
    output = tmp_path / "killed.csv"
    command = [sys.executable, "-m", "emulator.cli", "sweep", str(spec_file), "-o", str(output),
               "--workers", "1"]
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sweep.poll() is None:
        if output.exists() and len(output.read_text().splitlines()) >= 3:  # header + 2 rows
            break
        time.sleep(0.01)
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=30)
    assert sweep.returncode == 130, err
    assert "rerun the same command to resume" in err
    before = ids_in(output)
    assert 2 <= len(before) < 12
    summary = run_sweep(spec_file, output, workers=2, progress=None)
    assert (summary.skipped, summary.computed) == (len(before), 12 - len(before))
    after = ids_in(output)
    assert after[:len(before)] == before and len(after) == len(set(after)) == 12


def test_a_pool_needs_a_worker(spec_file, tmp_path):
    with pytest.raises(ValueError, match=r"workers=0 must be >= 1"):
        run_sweep(spec_file, tmp_path / "r.csv", workers=0, progress=None)
    assert not (tmp_path / "r.csv").exists()


def test_cli_sweep_prints_a_summary(spec_file, tmp_path, capsys):
    output = tmp_path / "cli.csv"
    assert main(["sweep", str(spec_file), "-o", str(output), "--workers", "1",
                 "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "12 points, 2 computed (0 failed), 0 already in" in out and "10 left" in out
    with open(output, newline="") as results:
        header = next(csv.reader(results))
    assert header[:3] == ["id", "workload", "machine"]
    assert header[-len(RESULT_COLUMNS):] == list(RESULT_COLUMNS)
    assert main(["sweep", "--workloads"]) == 0
    assert "shape.m (int, default 1024)" in capsys.readouterr().out


def test_progress_line_counts_rate_and_eta():
    bar = Progress(10, 2, None)
    bar.done, bar.failed = 4, 1
    line = bar.line(bar.start + 2.0)
    assert line.startswith("[############..................] 4/10 points (1 failed, "
                           "2 already done) 2.00 pt/s ETA 0:00:03")


# --- ncemu bench ----------------------------------------------------------------------------

def test_bench_lists_the_suites(capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for suite in ("speed", "systolic_speed", "timing_speed"):
        assert f"  {suite} " in out
    assert main(["bench", "nonesuch"]) == 1
    assert "unknown benchmark suite 'nonesuch'" in capsys.readouterr().err


def test_python_m_benchmarks_lists_the_suites():
    done = subprocess.run([sys.executable, "-m", "benchmarks"], capture_output=True, text=True,
                          check=True)
    assert "timing_speed" in done.stdout and "speed" in done.stdout
