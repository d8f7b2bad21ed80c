"""Run whole models: compile an operator graph with the kernel library's lowering, trace it to
programs, run them on an emulated instance, and report per operator.

    from emulator.model_runner import build_model, run_model
    result = run_model(build_model("bert-base", seq=128), machine="inf2.xlarge",
                       functional=False, precision="bf16")
    print(result.report.text())          # latency, throughput, engines, HBM, top operators

`run_model` runs the compiler's passes one by one (a progress line per pass, and one per 10% of
nodes traced, on stderr when asked), the `lower` pass being `kernels.graph.lowering.lower`.  One
core runs the program with `emulator.runner.run`; several cores run with
`emulator.system.run_system`: data parallel (every core the same program on its slice of the
batch) or pipeline (one program per stage, send/recv between the cores).  Timing-only runs
trace from shapes alone: no weight or activation array is ever made.

The report attributes time to operators from the lowering's records: a node's busy time is the
sum of its instructions' engine time (a DMA counts from issue to completion), its span from its
first instruction's start to its last one's end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from emulator.economics import Economics, economics
from emulator.machine import InstanceSpec
from emulator.report import MEMORY_KEYS, Report
from emulator.runner import resolve_instance, run
from emulator.system import run_system
from emulator.timing import COLLECTIVE, DMA, SIGNAL, WAIT, Schedule
from isa.instructions import Recv
from isa.target import stream_engine
from kernels.graph import models
from kernels.graph.check import check
from kernels.graph.compiler import CompileOptions, passes, run_pass
from kernels.graph.ir import Graph
from kernels.graph.lowering import LoweredModel, Lowering
from kernels.graph.rewrite import infer_types
from kernels.graph.tensor import GraphError, Value

SCHEMA = "ncemu.model_report/1"
TOP_OPERATORS = 10


# ---- the models the command line knows -----------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """A named model: its builder and which size options (--seq, --layers, --image-size) it
    takes."""

    name: str
    summary: str
    build: Callable[..., Graph]
    options: tuple[str, ...]


def _bert(config: models.BertConfig) -> Callable[..., Graph]:
    def build(batch: int | None = None, seq: int | None = None,
              layers: int | None = None) -> Graph:
        overrides = {k: v for k, v in (("batch", batch), ("seq_len", seq), ("layers", layers))
                     if v is not None}
        return models.bert(config, **overrides)
    return build


def _gpt(batch: int | None = None, seq: int | None = None, layers: int | None = None) -> Graph:
    config = models.GPT2_SMALL if layers is None else models.GptConfig(layers=layers)
    return models.gpt_prefill(config, batch=batch or 1, seq_len=seq or 128)


def _resnet(depth: int) -> Callable[..., Graph]:
    def build(batch: int | None = None, image_size: int | None = None) -> Graph:
        return models.resnet(depth, image_size=image_size or 224, batch=batch or 1)
    return build


def _mlp(batch: int | None = None) -> Graph:
    return models.mlp(batch=batch or 8)


MODELS: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("mlp", "MLP 784-256-10, relu (batch 8)", _mlp, ("batch",)),
    ModelSpec("bert-base", "BERT-base encoder: 12 layers, hidden 768, seq 128",
              _bert(models.BERT_BASE), ("batch", "seq", "layers")),
    ModelSpec("bert-large", "BERT-large encoder: 24 layers, hidden 1024, seq 128",
              _bert(models.BERT_LARGE), ("batch", "seq", "layers")),
    ModelSpec("gpt2", "GPT-2 small prefill: 12 layers, hidden 768, seq 128, LM head", _gpt,
              ("batch", "seq", "layers")),
    ModelSpec("gpt-small", "alias of gpt2", _gpt, ("batch", "seq", "layers")),
    ModelSpec("resnet50", "ResNet-50 (bottlenecks), 224x224 images", _resnet(50),
              ("batch", "image_size")),
    ModelSpec("resnet18", "ResNet-18 (basic blocks), 224x224 images", _resnet(18),
              ("batch", "image_size")),
)}


def build_model(name: str, *, batch: int | None = None, seq: int | None = None,
                layers: int | None = None, image_size: int | None = None) -> Graph:
    """The graph of model `name` (see MODELS); size options a model does not take must be None."""
    if name not in MODELS:
        raise GraphError(f"unknown model {name!r}; models: {', '.join(MODELS)}")
    spec = MODELS[name]
    given = {"batch": batch, "seq": seq, "layers": layers, "image_size": image_size}
    extra = sorted(k for k, v in given.items() if v is not None and k not in spec.options)
    if extra:
        raise GraphError(f"model {name} takes no {', '.join(extra)} (it takes "
                         f"{', '.join(spec.options)})")
    return spec.build(**{k: v for k, v in given.items() if k in spec.options})


def parse_tile(text: str) -> tuple[str, str, int]:
    """`NODE:KEY=VALUE` (a `--tile` option) as (node, key, value)."""
    node, sep, assignment = text.rpartition(":")
    key, eq, value = assignment.partition("=")
    if not sep or not node or not eq or not key.strip():
        raise ValueError(f"tile {text!r} must be NODE:KEY=VALUE, e.g. layer0/intermediate:"
                         f"tile_n=256")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"tile {text!r}: value {value!r} must be an int") from None
    return node, key.strip(), number


def tile_layouts(items: list[str] | None) -> dict[str, dict[str, int]]:
    """`--tile` options as {node: {key: value}}."""
    layouts: dict[str, dict[str, int]] = {}
    for item in items or ():
        node, key, value = parse_tile(item)
        layouts.setdefault(node, {})[key] = value
    return layouts


def random_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Random graph inputs: floats standard normal, 0/1 for inputs named like a mask, and
    integer ids below the size of every table they index (2 if they index none)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, t in graph.graph_inputs.items():
        if t.dtype.is_float:
            if "mask" in name:
                arrays[name] = (rng.random(t.shape) > 0.1).astype(np.float32)
            else:
                arrays[name] = rng.standard_normal(t.shape).astype(np.float32)
            continue
        limits = [graph.type_of(graph.inputs(v)[0]).shape[graph.op(v).axis]
                  for v, k in graph.consumers(Value(name))
                  if graph.op(v).op == "gather" and k == 1]
        arrays[name] = rng.integers(0, min(limits, default=2), t.shape).astype(t.dtype.storage)
    return arrays


# ---- reports -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OperatorTime:
    """Time attributed to one graph node: engine busy time of its instructions (per engine),
    and its span from first start to last end, on the core that ran it."""

    node: str
    op: str
    core: int
    kernels: tuple[str, ...]
    instructions: int
    busy_ns: float
    span_ns: float
    start_ns: float
    end_ns: float
    engines: dict[str, float]

    def to_json(self) -> dict:
        return {"node": self.node, "op": self.op, "core": self.core,
                "kernels": list(self.kernels), "instructions": self.instructions,
                "busy_ns": self.busy_ns, "span_ns": self.span_ns, "start_ns": self.start_ns,
                "end_ns": self.end_ns, "engines": dict(self.engines)}


@dataclass
class ModelReport:
    """Everything measured about one model run."""

    model: str
    machine: str
    precision: str
    batch: int
    cores: int
    partition: str | None
    latency_ns: float
    interval_ns: float  # time between batches in steady state (pipeline: the longest stage)
    economics: Economics
    instructions: int
    operators: list[OperatorTime]
    run: Report
    wall_s: dict[str, float]
    hbm_plan: dict[str, int] = field(default_factory=dict)
    collectives: dict[str, Any] = field(default_factory=dict)  # tensor parallel: all-reduces

    @property
    def latency_per_inference_ns(self) -> float:
        """The batch's latency shared out over its inferences (they finish together)."""
        return self.latency_ns / self.batch

    @property
    def hbm_bytes(self) -> dict[str, int]:
        return {key: int(sum(c.memory[key] for c in self.run.cores))
                for key in ("hbm_read_bytes", "hbm_write_bytes")}

    def top(self, n: int = TOP_OPERATORS) -> list[OperatorTime]:
        """The n operators with the most engine busy time."""
        return sorted(self.operators, key=lambda o: (-o.busy_ns, o.node))[:n]

    def text(self) -> str:
        e = self.economics
        hbm = self.hbm_bytes
        lines = [
            f"model {self.model} on {self.machine}: batch {self.batch}, {self.precision}, "
            f"{self.cores} core(s)" + (f", {self.partition} parallel" if self.partition else ""),
            f"  latency {self.latency_ns / 1e3:.1f} us per batch "
            f"({self.latency_per_inference_ns / 1e3:.1f} us per inference); "
            f"{self.instructions} instructions",
            f"  throughput {e.throughput_per_s:.1f} inferences/s on {e.instance} "
            f"({e.replicas} replica(s)), ${e.cost_per_million:.2f} per million at "
            f"${e.price_per_hour:.2f}/h",
            f"  HBM traffic: read {_mib(hbm['hbm_read_bytes'])}, write "
            f"{_mib(hbm['hbm_write_bytes'])}"
            + (f"; weights {_mib(self.hbm_plan['weights_bytes'])}, activation peak "
               f"{_mib(self.hbm_plan['activation_peak_bytes'])}" if self.hbm_plan else ""),
            f"  TensorE HFU {100 * self.run.tensor_hfu:.1f}%"]
        c = self.collectives
        if c:
            lines.append(f"  all-reduce: {c['count']} over cores {c['ranks']}, "
                         f"{c['time_ns'] / 1e3:.1f} us on core {c['ranks'][0]} "
                         f"({100 * c['share']:.1f}% of latency), "
                         f"{_mib(c['link_bytes'])} over NeuronLink")
        lines += [
            "  engine utilisation:"]
        ranks = c.get("ranks") or list(range(len(self.run.cores)))  # tensor parallel: its cores
        for rank, core in zip(ranks, self.run.cores):
            busy = "  ".join(f"{name} {100 * stats.utilization:.1f}%"
                             for name, stats in core.engines.items())
            lines.append(f"    core {rank}: {busy}")
        lines.append(f"  top operators by engine busy time (of {len(self.operators)}):")
        width = max((len(o.node) for o in self.top()), default=4)
        lines.append(f"    {'node':<{width}}  {'op':<14}{'busy us':>10}{'span us':>10}"
                     f"{'instr':>8}  kernels")
        for o in self.top():
            lines.append(f"    {o.node:<{width}}  {o.op:<14}{o.busy_ns / 1e3:>10.1f}"
                         f"{o.span_ns / 1e3:>10.1f}{o.instructions:>8}  {', '.join(o.kernels)}")
        lines.append("  wall time: " + ", ".join(f"{k} {v:.2f} s" for k, v in
                                                  self.wall_s.items()))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA, "model": self.model, "machine": self.machine,
            "precision": self.precision, "batch": self.batch, "cores": self.cores,
            "partition": self.partition, "latency_ns": self.latency_ns,
            "latency_per_inference_ns": self.latency_per_inference_ns,
            "interval_ns": self.interval_ns, "economics": self.economics.to_json(),
            "instructions": self.instructions,
            "engines": [{name: {"busy_ns": s.busy_ns, "utilization": s.utilization,
                                "instructions": s.instructions}
                         for name, s in core.engines.items()} for core in self.run.cores],
            "hbm": {**self.hbm_bytes, **self.hbm_plan},
            "memory": [{key: core.memory[key] for key in MEMORY_KEYS}
                       for core in self.run.cores],
            "tensor_hfu": self.run.tensor_hfu,
            "top_operators": [o.to_json() for o in self.top()],
            "operators": [o.to_json() for o in self.operators],
            "wall_s": dict(self.wall_s),
            "run": self.run.to_json(),
            "collectives": dict(self.collectives),
        }


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass
class ModelResult:
    """Outputs by graph output name (empty in timing-only mode), the report, the compiled graph
    and its lowering."""

    outputs: dict[str, np.ndarray]
    report: ModelReport
    graph: Graph
    lowered: LoweredModel


# ---- running -------------------------------------------------------------------------------------
def _say(progress: TextIO | None, message: str) -> None:
    if progress is not None:
        print(f"[ncemu] {message}", file=progress, flush=True)


def prepare(graph: Graph, batch: int | None = None,
            layouts: Mapping[str, Mapping[str, int]] | None = None) -> Graph:
    """A copy of `graph` re-batched (axis 0 of every input) and with layout requests set."""
    g = graph.copy()
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise GraphError(f"batch={batch!r} must be a positive int")
        for name, t in graph.graph_inputs.items():
            if not t.shape:
                raise GraphError("is a scalar input: the graph cannot be re-batched", name)
            g = g.with_input(name, (batch,) + t.shape[1:])
        g = infer_types(g)  # the other tensors' types follow the new inputs
    for node, params in (layouts or {}).items():
        if node not in g:
            raise GraphError("no such node (layouts); `ncemu compile MODEL` lists the nodes",
                             node)
        g.set_layout(node, **dict(params))
    return g


def compile_model(graph: Graph, instance: InstanceSpec, *, precision: str | None = None,
                  cores: int = 1, partition: str | None = None,
                  progress: TextIO | None = None,
                  dump: Callable[[str, Graph], None] | None = None
                  ) -> tuple[Graph, dict[str, float]]:
    """Run every compiler pass (the last one lowering with the kernel library); the compiled
    graph (its `meta["lowered"]` is the LoweredModel) and the wall time of compiling and of
    lowering (tracing).  `dump(pass name, graph)` is called after every pass."""
    target = instance.chip.core.target
    options = CompileOptions(precision=precision, cores=cores, partition=partition,
                             lowering=Lowering(progress=lambda m: _say(progress, m)))
    start = time.perf_counter()
    check(graph, target)
    g, wall = graph, {"compile_s": 0.0, "trace_s": 0.0}
    for name in passes():
        t0 = time.perf_counter()
        g = run_pass(name, g, target, options)
        took = time.perf_counter() - t0
        wall["trace_s" if name == "lower" else "compile_s"] += took
        _say(progress, f"pass {name}: {took:.2f} s, {len(g)} nodes")
        if dump is not None:
            dump(name, g)
    g.meta["passes"] = tuple(passes())
    wall["compile_s"] = time.perf_counter() - start - wall["trace_s"]  # the checks included
    return g, wall


def run_model(graph: Graph, inputs: Mapping[str, Any] | None = None,
              machine: str | InstanceSpec = "inf2", functional: bool = True,
              batch: int | None = None, cores: int = 1, partition: str | None = None,
              layouts: Mapping[str, Mapping[str, int]] | None = None, *,
              precision: str | None = None, progress: bool | TextIO = False, seed: int = 0,
              race_check: bool = True, tensor_parallel: int = 1,
              packed: bool = False) -> ModelResult:
    """Compile `graph`, trace it, run it on `machine` and report (see the module docstring).

    `inputs` (graph input name -> array) default to `random_inputs(graph, seed)` in functional
    mode; `functional=False` is timing-only.  `batch` re-batches every input's axis 0; `cores`
    > 1 runs `partition` "data" (the default) or "pipeline".  `layouts` {node: {tile: value}}
    override the layout pass's tile choice.  `precision` stores every float tensor in that
    dtype ("bf16", ...; default the graph's own).  `progress=True` writes progress lines to
    stderr (or give a stream).

    `tensor_parallel=n` shards the transformer layers over n ranks (Megatron style,
    `kernels.graph.sharding`), one program per rank, all-reduces between them.  Ranks sit one
    per chip (cores 0, c, 2c, ... for c cores per chip) so the all-reduce crosses NeuronLink;
    `packed=True` uses cores 0..n-1 instead (same-chip neighbours exchange through device
    memory).  Outputs come from the first rank; the report's `collectives` give the all-reduce
    time on that rank, its share of the latency and the NeuronLink bytes."""
    stream = sys.stderr if progress is True else (progress or None)
    instance = resolve_instance(machine)
    if tensor_parallel != 1:
        if cores != 1 or partition is not None:
            raise GraphError("tensor_parallel (--tensor-parallel) does not combine with cores "
                             "or partition (--cores, --partition): a rank is one core")
        return _run_tensor_parallel(graph, inputs, instance, functional, batch, layouts,
                                    precision, stream, seed, race_check, tensor_parallel,
                                    packed)
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise GraphError(f"cores={cores!r} must be a positive int")
    if cores > instance.cores:
        raise GraphError(f"cores={cores} exceeds the {instance.cores} NeuronCores of "
                         f"{instance.name}")
    if cores > 1 and partition is None:
        partition = "data"
    start = time.perf_counter()
    g = prepare(graph, batch, layouts)
    compiled, wall = compile_model(g, instance, precision=precision, cores=cores,
                                   partition=partition, progress=stream)
    lowered: LoweredModel = compiled.meta["lowered"]
    feeds = None
    if functional:
        given = random_inputs(compiled, seed) if inputs is None else inputs
        feeds = lowered.feeds(compiled, given)
    t0 = time.perf_counter()
    _say(stream, f"run: {lowered.instruction_count} instructions on {lowered.replicas} "
                 f"core(s) of {instance.name}" + ("" if functional else ", timing only"))
    if lowered.replicas == 1:
        result = run(lowered.programs[0], feeds[0] if feeds else None, instance,
                     functional=functional, race_check=race_check)
        report, schedules, outputs = result.report, [result.report.schedule], [result.outputs]
    else:
        programs = list(lowered.programs) * (lowered.cores if lowered.partition == "data" else 1)
        system = run_system(programs, feeds, instance, ranks=list(range(len(programs))),
                            functional=functional, race_check=race_check)
        report, schedules = system.report, system.schedules
        outputs = [system.outputs.get(k, {}) for k in range(len(programs))]
    wall["run_s"] = time.perf_counter() - t0
    wall["total_s"] = time.perf_counter() - start
    _say(stream, f"run: done in {wall['run_s']:.2f} s, latency {report.latency_ns / 1e3:.1f} us")
    values = lowered.collect(outputs) if functional else {}
    batch_size = _batch_of(compiled)
    interval = _interval(lowered, schedules, report.latency_ns)
    plan = compiled.meta.get("hbm")
    hbm_plan = {} if plan is None else {"weights_bytes": plan.weights_bytes,
                                        "activation_peak_bytes": plan.activation_peak_bytes}
    model_report = ModelReport(
        compiled.name, report.machine, precision or "declared", batch_size, cores,
        lowered.partition, report.latency_ns, interval,
        economics(instance, interval, batch_size, cores), lowered.instruction_count,
        operator_times(lowered, schedules), report, wall, hbm_plan)
    return ModelResult(values, model_report, compiled, lowered)


def tp_ranks(instance: InstanceSpec, n: int, packed: bool = False) -> list[int]:
    """The cores of n tensor-parallel ranks: one per chip, or packed onto the first cores."""
    per_chip = instance.chip.cores
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GraphError(f"tensor_parallel={n!r} must be a positive int")
    if packed or instance.chips == 1:
        if n > instance.cores:
            raise GraphError(f"tensor_parallel={n} exceeds the {instance.cores} NeuronCores of "
                             f"{instance.name}")
        return list(range(n))
    if n > instance.chips:
        raise GraphError(f"tensor_parallel={n} exceeds the {instance.chips} chips of "
                         f"{instance.name} (one rank per chip; packed=True for more)")
    return [c * per_chip for c in range(n)]


def _run_tensor_parallel(graph, inputs, instance, functional, batch, layouts, precision, stream,
                         seed, race_check, n, packed) -> ModelResult:
    from kernels.graph.sharding import tensor_parallel as shard

    ranks = tp_ranks(instance, n, packed)
    start = time.perf_counter()
    g = prepare(graph, batch, layouts)
    wall = {"compile_s": 0.0, "trace_s": 0.0}
    compiled, lowered = [], []
    for rank_graph in shard(g, n, ranks):
        c, w = compile_model(rank_graph, instance, precision=precision, progress=stream)
        wall["compile_s"] += w["compile_s"]
        wall["trace_s"] += w["trace_s"]
        compiled.append(c)
        lowered.append(c.meta["lowered"])
    feeds = None
    if functional:
        given = random_inputs(compiled[0], seed) if inputs is None else inputs
        feeds = [lo.feeds(c, given)[0] for lo, c in zip(lowered, compiled)]
    t0 = time.perf_counter()
    _say(stream, f"run: tensor parallel over cores {ranks} of {instance.name}")
    system = run_system([lo.programs[0] for lo in lowered], feeds, instance, ranks=ranks,
                        functional=functional, race_check=race_check)
    report, schedules = system.report, system.schedules
    wall["run_s"] = time.perf_counter() - t0
    wall["total_s"] = time.perf_counter() - start
    values = lowered[0].collect([system.outputs.get(ranks[0], {})]) if functional else {}
    schedule = schedules[0]
    rows = np.flatnonzero(schedule.encoded.kind == COLLECTIVE)
    durations = [float(schedule.end_ns[r] - schedule.start_ns[r]) for r in rows]
    collectives = {"count": len(rows), "ranks": ranks, "time_ns": float(sum(durations)),
                   "durations_ns": durations,
                   "share": float(sum(durations)) / report.latency_ns if report.latency_ns
                   else 0.0,
                   "link_bytes": float(sum(report.links.values()))}
    batch_size = _batch_of(compiled[0])
    model_report = ModelReport(
        compiled[0].name, report.machine, precision or "declared", batch_size, n, "tensor",
        report.latency_ns, report.latency_ns,
        economics(instance, report.latency_ns, batch_size, n),  # other cores: more replicas
        sum(lo.instruction_count for lo in lowered),
        operator_times(lowered[0], [schedule]), report, wall, {}, collectives)
    return ModelResult(values, model_report, compiled[0], lowered[0])


def _batch_of(graph: Graph) -> int:
    """Inferences per run: axis 0 of the first graph input (1 for a scalar input)."""
    first = next(iter(graph.graph_inputs.values()), None)
    return first.shape[0] if first is not None and first.shape else 1


def _interval(lowered: LoweredModel, schedules: list[Schedule], latency: float) -> float:
    """Time between batches: the latency, or for a pipeline the longest stage, each stage timed
    from the first tensor it receives to its last instruction."""
    if lowered.partition != "pipeline":
        return latency
    longest = 0.0
    for schedule in schedules:
        encoded = schedule.encoded
        recv_rows = []
        for k, stream in enumerate(encoded.program.streams):
            first = encoded.stream_first[k]
            recv_rows += [first + i for i, instr in enumerate(stream.instructions)
                          if isinstance(instr, Recv)]
        begin = float(schedule.end_ns[recv_rows].min()) if recv_rows else 0.0
        longest = max(longest, schedule.latency_ns - begin)
    return longest or latency


def operator_times(lowered: LoweredModel, schedules: list[Schedule]) -> list[OperatorTime]:
    """Per lowered node: its instructions' engine busy time and span on its core."""
    times = []
    for record in lowered.nodes:
        if not record.spans:
            continue
        schedule = schedules[record.program]
        encoded = schedule.encoded
        stream_index = {name: k for k, name in enumerate(encoded.streams)}
        rows = np.concatenate([np.arange(s.start, s.end) + encoded.stream_first[
            stream_index[s.stream]] for s in record.spans])
        kinds = encoded.kind[rows]
        real = rows[(kinds != WAIT) & (kinds != SIGNAL)]
        if real.size == 0:
            continue
        transfer = np.isin(encoded.kind[real], (DMA, COLLECTIVE))
        busy = np.where(transfer, schedule.end_ns[real] - schedule.start_ns[real],
                        encoded.busy_ns[real] + schedule.delay_ns[real])
        engines: dict[str, float] = {}
        for span in record.spans:
            name = stream_engine(span.stream).value
            first = encoded.stream_first[stream_index[span.stream]]
            mask = (real >= first + span.start) & (real < first + span.end)
            if mask.any():
                engines[name] = engines.get(name, 0.0) + float(busy[mask].sum())
        start, end = float(schedule.start_ns[real].min()), float(schedule.end_ns[real].max())
        times.append(OperatorTime(record.node, record.op, record.program, record.kernels,
                                  int(real.size), float(busy.sum()), end - start, start, end,
                                  engines))
    return times
