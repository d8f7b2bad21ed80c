"""`ncemu compare`: serving cost across instances; inf1 vs inf2 end to end."""

from __future__ import annotations

import json

import pytest

from emulator.cli import main
from emulator.machine import INSTANCES
from emulator.model_runner import build_model, run_model

INSTANCES_ARG = "inf1.xlarge,inf2.xlarge,inf2.48xlarge"


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compare_bert_table_and_json(capsys, tmp_path):
    code, text, _ = run_cli(capsys, "compare", "bert-base", "--layers", "1", "--seq", "32",
                            "--instances", INSTANCES_ARG, "--plot", str(tmp_path / "c.png"))
    assert code == 0
    for name in INSTANCES_ARG.split(","):
        assert name in text
    assert (tmp_path / "c.png").stat().st_size > 0
    code, text, _ = run_cli(capsys, "compare", "bert-base", "--layers", "1", "--seq", "32",
                            "--instances", INSTANCES_ARG, "--json")
    rows = json.loads(text)["rows"]
    assert [r["instance"] for r in rows] == INSTANCES_ARG.split(",")
    for r in rows:
        price = INSTANCES[r["instance"]].price_per_hour
        assert r["cost_per_million"] == pytest.approx(price / 3600 / r["throughput_per_s"] * 1e6)
        assert r["replicas"] == INSTANCES[r["instance"]].cores
        assert r["bound"] in ("memory", "compute")
    assert rows[0]["latency_us"] > rows[1]["latency_us"]  # inf1 slower per core


def test_compare_resnet(capsys):
    code, text, _ = run_cli(capsys, "compare", "resnet18", "--image-size", "32",
                            "--instances", "inf1.xlarge,inf2.xlarge", "--json")
    assert code == 0
    assert len(json.loads(text)["rows"]) == 2


def test_bad_instance_named(capsys):
    code, _, err = run_cli(capsys, "compare", "resnet18", "--instances", "inf2.xlarge,inf9.huge")
    assert code != 0 and "inf9.huge" in err


def test_inf1_slower_than_inf2_end_to_end():
    graph = build_model("bert-base", layers=1, seq=32)
    inf1 = run_model(graph, machine="inf1.xlarge", functional=False).report
    inf2 = run_model(graph, machine="inf2.xlarge", functional=False).report
    assert inf1.latency_ns > inf2.latency_ns
    assert "gpsimd" not in inf1.run.cores[0].engines


def test_replicas_on_one_chip_share_its_memory_bandwidth():
    # Inf1's four cores share 50 GiB/s of device memory: four replicas of a memory-bound model
    # at once take longer than one alone, and serving cost follows the slower, full-chip figure.
    from emulator.commands.compare import compare
    from emulator.machine import INSTANCES

    rows = {r["instance"]: r for r in compare("bert-base", [INSTANCES["inf1.xlarge"]],
                                              layers=1, seq=32)}
    row = rows["inf1.xlarge"]
    assert row["chip_latency_us"] > 1.5 * row["latency_us"]
    assert row["throughput_per_s"] == pytest.approx(
        4 * row["batch"] / (row["chip_latency_us"] * 1e-6))
