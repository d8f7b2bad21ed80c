"""`ncemu compare`: serving cost of one model across instance types.

    ncemu compare bert-base --instances inf1.xlarge,inf2.xlarge,inf2.48xlarge
    ncemu compare resnet50 --batch 4 --json
    ncemu compare bert-base --layers 1 --plot cost.png

The model runs timing-only on one NeuronCore of each instance's chip type, alone ("latency")
and then with every core of the chip running its own replica at once ("chip", where the cores
share the chip's device-memory bandwidth); the instance serves with one replica per core
(replicas = cores / 1) at the full-chip latency.  Per
instance: latency, throughput, cost per million inferences (price / 3600 / throughput * 1e6),
per-engine utilisation, and whether the run is memory- or compute-bound (its arithmetic
intensity, flops per HBM byte, against the core's ridge point: Tensor-engine peak over its
share of the chip's HBM bandwidth).
"""

from __future__ import annotations

import argparse
import json
import sys

from emulator.economics import economics
from emulator.machine import INSTANCES, InstanceSpec
from emulator.model_runner import build_model, run_model
from emulator.system import run_system

DEFAULT_INSTANCES = "inf1.xlarge,inf2.xlarge,inf2.48xlarge"


def parse_instances(text: str) -> list[InstanceSpec]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in INSTANCES]
    if unknown or not names:
        raise ValueError(f"unknown instance(s) {', '.join(unknown) or '(none given)'}; "
                         f"instances: {', '.join(INSTANCES)}")
    return [INSTANCES[n] for n in names]


def ridge_point(instance: InstanceSpec) -> float:
    """Flops per HBM byte at which one core's Tensor engine and its HBM share balance."""
    chip = instance.chip
    return chip.core.tensor_peak_flops / (chip.hbm_gbps * 1e9 / chip.cores)


def chip_latency(result, instance: InstanceSpec) -> float:
    """Latency when every core of one chip serves its own replica at once: the cores share the
    chip's device-memory bandwidth, so a memory-bound model slows down (Inf1's 4 cores share
    50 GiB/s).  Serving throughput is computed from this, not from one core alone."""
    programs = list(result.lowered.programs)
    if len(programs) != 1 or instance.chip.cores == 1:
        return result.report.latency_ns
    replicas = [programs[0]] * instance.chip.cores
    system = run_system(replicas, None, instance, functional=False, race_check=False)
    return system.report.latency_ns


def compare(model: str, instances: list[InstanceSpec], *, batch: int | None = None,
            seq: int | None = None, layers: int | None = None,
            image_size: int | None = None) -> list[dict]:
    """One row per instance (see the module docstring)."""
    graph = build_model(model, batch=batch, seq=seq, layers=layers, image_size=image_size)
    runs: dict[str, object] = {}
    rows = []
    for instance in instances:
        chip = instance.chip.name
        if chip not in runs:  # one run per chip type: one replica alone, then a full chip
            result = run_model(graph, machine=instance, functional=False)
            runs[chip] = (result.report, chip_latency(result, instance))
        report, latency = runs[chip]
        e = economics(instance, latency, report.batch, 1)
        core = report.run.cores[0]
        engines = {name: s.utilization for name, s in core.engines.items()}
        intensity = report.run.arithmetic_intensity or 0.0
        ridge = ridge_point(instance)
        busiest = max(engines, key=engines.get) if engines else "-"
        rows.append({
            "instance": instance.name, "chip": chip, "core": instance.chip.core.name,
            "cores": instance.cores, "replicas": e.replicas, "batch": report.batch,
            "latency_us": report.latency_ns / 1e3, "chip_latency_us": latency / 1e3,
            "throughput_per_s": e.throughput_per_s,
            "price_per_hour": e.price_per_hour, "cost_per_million": e.cost_per_million,
            "engines": engines, "busiest_engine": busiest,
            "arithmetic_intensity": intensity, "ridge_point": ridge,
            "bound": "compute" if intensity >= ridge else "memory",
        })
    return rows


def format_table(model: str, rows: list[dict]) -> str:
    head = (f"{'instance':<15}{'core':<15}{'latency us':>11}{'chip us':>10}{'inf/s':>11}"
            f"{'$/M inf':>9}"
            f"{'replicas':>9}  {'bound':<8}{'AI/ridge':>13}  engines")
    lines = [f"serving {model}: one core per replica, timing-only", head]
    for r in rows:
        engines = " ".join(f"{k} {100 * v:.0f}%" for k, v in r["engines"].items())
        lines.append(f"{r['instance']:<15}{r['core']:<15}{r['latency_us']:>11.1f}"
                     f"{r['chip_latency_us']:>10.1f}"
                     f"{r['throughput_per_s']:>11.1f}{r['cost_per_million']:>9.3f}"
                     f"{r['replicas']:>9}  {r['bound']:<8}"
                     f"{r['arithmetic_intensity']:>6.0f}/{r['ridge_point']:<6.0f}  {engines}")
    return "\n".join(lines)


def plot(model: str, rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["instance"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].bar(names, [r["cost_per_million"] for r in rows], color="tab:blue")
    axes[0].set_ylabel("USD per million inferences")
    axes[1].bar(names, [r["throughput_per_s"] for r in rows], color="tab:green")
    axes[1].set_ylabel("inferences / s (whole instance)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(f"{model}: serving cost by instance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        instances = parse_instances(args.instances)
    except ValueError as err:
        print(f"ncemu compare: {err}", file=sys.stderr)
        return 2
    try:
        rows = compare(args.model, instances, batch=args.batch, seq=args.seq,
                       layers=args.layers, image_size=args.image_size)
    except Exception as err:  # a model / size error: say which
        print(f"ncemu compare: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"model": args.model, "rows": rows}, indent=1))
    else:
        print(format_table(args.model, rows))
    if args.plot:
        plot(args.model, rows, args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare", help="serving cost of a model across instance types",
        description="Time a model on one core of each instance's chip and compare latency, "
                    "throughput and cost per million inferences.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("model", help="a built-in model (bert-base, resnet50, ...)")
    parser.add_argument("--instances", default=DEFAULT_INSTANCES,
                        help=f"comma-separated instance names (default {DEFAULT_INSTANCES})")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="rows as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="bar plot of cost and throughput")
    parser.set_defaults(handler=cmd_compare)
