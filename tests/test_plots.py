"""Pictures (emulator/plots.py): systolic frames as GIF and PNGs, run timelines, the roofline.

Every image is read back and looked at: it exists, has a sensible size in bytes and pixels, is
not blank (pixel variance, more than a handful of colours), and successive systolic frames
differ.  The binned utilisation is checked against the report's busy times.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")  # plots.py draws on Agg canvases; pyplot never shows

from emulator.cli import main  # noqa: E402
from emulator.machine import chip_spec, core_spec  # noqa: E402
from emulator.plots import (  # noqa: E402
    busy_fraction,
    roofline_plot,
    systolic_gif,
    timeline_plot,
)
from emulator.runner import run  # noqa: E402
from emulator.systolic import SystolicArray, record, simulate  # noqa: E402
from emulator.teaching import fold_timings, random_gemm  # noqa: E402
from kernels.programs import tiled_matmul  # noqa: E402

PIL = pytest.importorskip("PIL.Image")
mpimg = pytest.importorskip("matplotlib.image")


def colour_count(pixels: np.ndarray) -> int:
    """Distinct RGB colours of an image with channels in [0, 1]."""
    rgb = np.round(pixels[..., :3] * 255).astype(np.uint32)
    return len(np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]))


def assert_picture(path, min_width: int = 400, min_height: int = 300) -> np.ndarray:
    """The PNG exists, is neither tiny nor huge, and is not blank; returns its RGB pixels."""
    assert path.is_file(), path
    assert 5_000 < path.stat().st_size < 5_000_000, path.stat().st_size
    pixels = mpimg.imread(path)[..., :3]
    height, width = pixels.shape[:2]
    assert min_width <= width <= 4000 and min_height <= height <= 4000, pixels.shape
    assert pixels.std() > 0.05  # values in [0, 1]: a blank or single-colour image has ~0
    assert colour_count(pixels) > 8
    return pixels


@pytest.fixture(scope="module")
def report():
    program = tiled_matmul(256, 128, 512, "bf16")
    return run(program, None, "inf2", functional=False).report


def test_systolic_gif_and_png_frames(tmp_path, capsys):
    gif, pngs = tmp_path / "wave.gif", tmp_path / "frames"
    argv = ["systolic", "--dataflow", "os", "--rows", "2", "--cols", "3", "--m", "2", "--k",
            "2", "--n", "3", "--gif", str(gif), "--png-dir", str(pngs), "--fps", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    stationary, moving = random_gemm(2, 2, 3, 0, "int")
    cycles = simulate(SystolicArray(2, 3, "os"), stationary, moving).total_cycles
    # os, one fold: fill m+n-2 = 3 + stream k = 2 + drain rows = 2 = 7 cycles.
    assert cycles == 7
    assert f"animation written to {gif} (7 frames)" in out

    with PIL.open(gif) as animation:
        assert animation.format == "GIF"
        assert animation.n_frames == cycles
        assert animation.size[0] >= 500 and animation.size[1] >= 400
        assert animation.info["duration"] == pytest.approx(250, abs=10)  # 4 frames per second
        images = []
        for index in range(animation.n_frames):
            animation.seek(index)
            images.append(np.asarray(animation.convert("RGB"), np.float64) / 255)
    assert gif.stat().st_size > 10_000
    for image in images:
        assert image.std() > 0.05
        assert colour_count(image) > 4
    # The wavefront moves: consecutive frames differ.
    assert all(np.any(a != b) for a, b in zip(images, images[1:]))

    files = sorted(pngs.glob("cycle_*.png"))
    assert [f.name for f in files] == [f"cycle_{c:04d}.png" for c in range(cycles)]
    pictures = [assert_picture(f, 500, 400) for f in files]
    assert all(p.shape == pictures[0].shape for p in pictures)
    assert all(np.any(a != b) for a, b in zip(pictures, pictures[1:]))
    # An active PE is drawn orange (#ffc36b); the first compute frame has one MAC, the blank
    # array of a later drain frame none.
    orange = np.array([0xff, 0xc3, 0x6b]) / 255

    def orange_pixels(picture: np.ndarray) -> int:
        return int(np.all(np.abs(picture - orange) < 0.02, axis=-1).sum())

    assert orange_pixels(pictures[0]) > 1000
    assert orange_pixels(pictures[-1]) == 0


def test_systolic_gif_rejects_bad_fps(tmp_path):
    array = SystolicArray(1, 1, "ws")
    frames = record(array, *random_gemm(1, 1, 1))
    with pytest.raises(ValueError, match="fps 0 must be > 0"):
        systolic_gif(array, frames, fold_timings(array, frames), tmp_path / "x.gif", fps=0)


def test_timeline_from_a_program_and_from_its_trace(tmp_path, capsys):
    picture, trace = tmp_path / "timeline.png", tmp_path / "trace.json"
    assert main(["timeline", "matmul", "--shape", "256x128x512", "-o", str(picture),
                 "--trace", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "timeline written to" in out and "latency" in out
    from_program = assert_picture(picture, 800, 400)
    assert json.loads(trace.read_text())["traceEvents"]

    again = tmp_path / "from_trace.png"
    assert main(["timeline", str(trace), "-o", str(again)]) == 0
    from_trace = assert_picture(again, 800, 400)
    # The trace holds the same instructions and times, so the same picture comes out.
    assert from_trace.shape == from_program.shape
    assert np.mean(np.abs(from_trace - from_program)) < 0.01


def test_timeline_plot_takes_schedule_report_and_trace(tmp_path, report):
    for source, name in ((report, "report"), (report.schedule, "schedule"),
                         (report.chrome_trace(), "trace")):
        path = timeline_plot(source, tmp_path / f"{name}.png", bins=50)
        assert_picture(path, 800, 400)


def test_binned_utilisation_matches_the_report(report):
    latency = report.latency_ns
    edges = np.linspace(0.0, latency, 101)
    encoded, schedule = report.schedule.encoded, report.schedule
    k = encoded.streams.index("tensor")
    rows = range(encoded.stream_first[k], encoded.stream_first[k + 1])
    rows = [r for r in rows if encoded.busy_ns[r] > 0]
    starts = schedule.start_ns[rows]
    ends = starts + encoded.busy_ns[rows] + schedule.delay_ns[rows]
    fraction = busy_fraction(starts, ends, edges)
    assert np.all((fraction >= 0) & (fraction <= 1 + 1e-12))
    # Equal bins: the mean busy fraction is the busy time over the latency.
    assert fraction.mean() == pytest.approx(report.cores[0].engines["tensor"].utilization,
                                            rel=1e-9)


def test_busy_fraction_of_overlapping_intervals():
    # [0,10) and [5,15) overlap into [0,15); [20,30) is separate.  Bins of 10 ns:
    # bin 0 fully covered, bin 1 covered 5 of 10, bin 2 fully covered.
    fraction = busy_fraction(np.array([5.0, 0.0, 20.0]), np.array([15.0, 10.0, 30.0]),
                             np.array([0.0, 10.0, 20.0, 30.0]))
    np.testing.assert_allclose(fraction, [1.0, 0.5, 1.0])
    # A bin inside one interval, and bins with nothing in them.
    np.testing.assert_allclose(
        busy_fraction(np.array([2.0]), np.array([8.0]), np.array([0.0, 4.0, 6.0, 10.0, 20.0])),
        [0.5, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(busy_fraction(np.array([]), np.array([]), np.array([0.0, 1.0])),
                               [0.0])


def test_roofline(tmp_path, report):
    spec, chip = core_spec("inf2"), chip_spec("inf2")
    path = roofline_plot(report, spec, chip, tmp_path / "roofline.png")
    assert_picture(path, 500, 350)


def test_plot_errors(tmp_path, report):
    with pytest.raises(ValueError, match="moved no HBM bytes"):
        roofline_plot(dataclasses.replace(report, arithmetic_intensity=None),
                      core_spec("inf2"), chip_spec("inf2"), tmp_path / "r.png")
    with pytest.raises(TypeError, match="Schedule, Report or trace dict, got list"):
        timeline_plot([], tmp_path / "t.png")
    with pytest.raises(ValueError, match="bins=0 must be an int >= 1"):
        timeline_plot(report, tmp_path / "t.png", bins=0)
    with pytest.raises(ValueError, match="no 'traceEvents' list"):
        timeline_plot({"events": []}, tmp_path / "t.png")
    with pytest.raises(ValueError, match="no timed instructions"):
        timeline_plot({"traceEvents": []}, tmp_path / "t.png")
    assert not (tmp_path / "t.png").exists()


@pytest.mark.parametrize("argv, code, fragments", [
    (["timeline", "matmul", "-o", "x.svg"], 1, ["-o x.svg", ".png"]),
    (["timeline", "matmul", "-o", "no/such/dir/x.png"], 1, ["no/such/dir", "does not exist"]),
    (["timeline", "matmul", "-o", "x.png", "--bins", "0"], 1, ["--bins 0", ">= 1"]),
    (["timeline", "missing.json", "-o", "x.png"], 2, ["no such trace file missing.json"]),
    (["timeline", "missing.nasm", "-o", "x.png"], 2, ["no such program file missing.nasm"]),
    (["timeline", "conv", "-o", "x.png"], 2, ["unknown run 'conv'"]),
])
def test_timeline_bad_arguments(tmp_path, monkeypatch, capsys, argv, code, fragments):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err
    assert not list(tmp_path.glob("*.png"))


def test_timeline_rejects_a_file_that_is_not_a_trace(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["timeline", str(bad), "-o", str(tmp_path / "x.png")]) == 1
    assert f"{bad} is not JSON" in capsys.readouterr().err
