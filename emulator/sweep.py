"""Sweeps: a grid of workloads x shapes x machines x layouts, one timing-only run per point.

A sweep spec is TOML, read as data (`load_spec`).  Each point runs as one task on a
`concurrent.futures.Executor`: a local process pool by default, or a Dask cluster through its
client's `concurrent.futures` interface (`Client.get_executor`), so both go through the same
submit / wait loop (DESIGN.md, "Scale").  Rows stream to a CSV file as points complete, keyed by
a stable hash of each point's parameters, and a rerun computes only the points not yet in it.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TextIO

from emulator.machine import InstanceSpec, instance_spec
from emulator.machine_file import load_machine_text
from emulator.report import Report
from emulator.runner import run
from emulator.workloads import WORKLOADS, Value, workload
from isa.target import Engine

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SPEC_KEYS = {
    "name": "the sweep's name (default: the spec file's stem)",
    "workload": "a workload name or a list of them",
    "machines": "a list of instance presets or machine .toml files (relative to the spec)",
    "shape": "a table: shape parameter -> list of values",
    "layout": "a table: layout parameter -> list of values",
}
GROUPS = ("shape", "layout")

POINT_COLUMNS = ("id", "workload", "machine")
ENGINE_COLUMNS = tuple(f"util_{engine.value}" for engine in Engine)
RESULT_COLUMNS = ("status", "latency_ns", "tensor_hfu", *ENGINE_COLUMNS, "hbm_read_bytes",
                  "hbm_write_bytes", "instructions", "flops", "emulation_s", "error")
_FLOAT_COLUMNS = frozenset({"latency_ns", "tensor_hfu", "emulation_s", *ENGINE_COLUMNS})
_INT_COLUMNS = frozenset({"hbm_read_bytes", "hbm_write_bytes", "instructions", "flops"})
_TEXT_COLUMNS = frozenset({*POINT_COLUMNS, "status", "error"})


class SpecError(ValueError):
    """A sweep spec that cannot describe a sweep; the message names the key."""


class SweepError(RuntimeError):
    """A sweep that cannot go on (its results file belongs to another sweep, a worker died)."""


@dataclass(frozen=True)
class Point:
    """One run of a sweep: a workload with every shape and layout parameter, on one machine.

    `machine` is a preset's canonical name or a machine file as the spec wrote it; for a file,
    `machine_digest` (the SHA-256 of its text) enters the id, so editing the file makes new
    points rather than reusing stale rows."""

    workload: str
    machine: str
    shape: tuple[tuple[str, Value], ...]
    layout: tuple[tuple[str, Value], ...]
    machine_digest: str = ""

    @property
    def id(self) -> str:
        """16 hex digits of the SHA-256 of the parameters as canonical JSON."""
        key = {"workload": self.workload, "machine": self.machine,
               "machine_digest": self.machine_digest,
               "shape": dict(self.shape), "layout": dict(self.layout)}
        text = json.dumps(key, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def row(self) -> dict[str, Value]:
        """The point's own columns of a results row."""
        return {"id": self.id, "workload": self.workload, "machine": self.machine,
                **dict(self.shape), **dict(self.layout)}


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep spec: the grid's axes, with every machine already resolved."""

    name: str
    workloads: tuple[str, ...]
    machines: dict[str, InstanceSpec]  # as the points name them -> the instance
    machine_digests: dict[str, str]  # machine files only -> SHA-256 of the file's text
    shape: dict[str, tuple[Value, ...]]
    layout: dict[str, tuple[Value, ...]]

    def points(self) -> list[Point]:
        """Every point of the grid, each once, in the order workload, machine, shape, layout."""
        points: dict[str, Point] = {}
        for name in self.workloads:
            wl = workload(name)
            axes = {group: [(p.name, getattr(self, group).get(p.name, (p.default,)))
                            for p in wl.params(group)] for group in GROUPS}
            shapes = _product(axes["shape"])
            layouts = _product(axes["layout"])
            for machine, shape, layout in itertools.product(self.machines, shapes, layouts):
                point = Point(name, machine, shape, layout, self.machine_digests.get(machine, ""))
                points.setdefault(point.id, point)
        return list(points.values())

    def columns(self) -> list[str]:
        """The results file's header: point columns, every parameter, then the results."""
        params: list[str] = []
        for name in self.workloads:
            for p in workload(name).shape + workload(name).layout:
                if p.name in POINT_COLUMNS or p.name in RESULT_COLUMNS:
                    raise SpecError(f"workload {name}: parameter {p.name!r} has the name of a "
                                    f"results column")
                if p.name not in params:
                    params.append(p.name)
        return [*POINT_COLUMNS, *params, *RESULT_COLUMNS]


def _product(axes: list[tuple[str, tuple[Value, ...]]]) -> list[tuple[tuple[str, Value], ...]]:
    names = [name for name, _ in axes]
    return [tuple(zip(names, values)) for values in itertools.product(*(v for _, v in axes))]


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep spec file; machine files in it are relative to the spec's folder."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"no sweep spec at {path}")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None
    try:
        return parse_spec(doc, path.parent, default_name=path.stem)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None


def parse_spec(doc: Mapping[str, object], base: str | Path = ".",
               default_name: str = "sweep") -> SweepSpec:
    """A SweepSpec from a parsed TOML document; every error names the offending key."""
    unknown = sorted(set(doc) - {"sweep"})
    if unknown:
        raise SpecError(f"unknown top-level key {unknown[0]}; a sweep spec has one table, [sweep]")
    table = doc.get("sweep")
    if not isinstance(table, dict):
        raise SpecError("missing [sweep] table")
    for key in table:
        if key not in SPEC_KEYS:
            raise SpecError(f"unknown key sweep.{key}; known keys: "
                            + "; ".join(f"{k} ({v})" for k, v in SPEC_KEYS.items()))
    name = table.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise SpecError(f"sweep.name = {name!r}: expected a non-empty string")
    workloads = _workloads(table.get("workload"))
    machines, digests = _machines(table.get("machines"), Path(base))
    groups = {group: _group(table.get(group, {}), group, workloads) for group in GROUPS}
    return SweepSpec(name, workloads, machines, digests, groups["shape"], groups["layout"])


def _string_list(value: object, key: str, example: str) -> list[str]:
    if not isinstance(value, list):
        raise SpecError(f"sweep.{key} = {value!r}: expected a list, e.g. {key} = {example}")
    if not value:
        raise SpecError(f"sweep.{key} is empty; give at least one, e.g. {key} = {example}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise SpecError(f"sweep.{key}[{i}] = {item!r}: expected a string")
    return value


def _workloads(value: object) -> tuple[str, ...]:
    if value is None:
        raise SpecError(f"missing key sweep.workload; known workloads: {', '.join(WORKLOADS)}")
    names = _string_list([value] if isinstance(value, str) else value, "workload", '["matmul"]')
    for i, name in enumerate(names):
        if name not in WORKLOADS:
            raise SpecError(f"sweep.workload[{i}]: unknown workload {name!r}; known workloads: "
                            f"{', '.join(WORKLOADS)}")
    return tuple(dict.fromkeys(names))


def _machines(value: object, base: Path) -> tuple[dict[str, InstanceSpec], dict[str, str]]:
    if value is None:
        raise SpecError('missing key sweep.machines, e.g. machines = ["inf2.xlarge"]')
    machines: dict[str, InstanceSpec] = {}
    digests: dict[str, str] = {}
    for i, entry in enumerate(_string_list(value, "machines", '["inf2.xlarge"]')):
        where = f"sweep.machines[{i}] = {entry!r}"
        if entry.endswith(".toml"):
            path = Path(entry) if Path(entry).is_absolute() else base / entry
            if not path.is_file():
                raise SpecError(f"{where}: no machine file at {path}")
            text = path.read_text()
            try:
                machines[entry] = load_machine_text(text, str(path))
            except ValueError as err:
                raise SpecError(f"{where}: {err}") from None
            digests[entry] = hashlib.sha256(text.encode()).hexdigest()
            continue
        try:
            instance = instance_spec(entry)
        except ValueError as err:
            raise SpecError(f"{where}: {err}") from None
        machines[instance.name] = instance  # aliases (inf2) name the same points as inf2.xlarge
    return machines, digests


def _group(table: object, group: str, workloads: tuple[str, ...]) -> dict[str, tuple[Value, ...]]:
    """The axes of one parameter group, each value checked by every workload that takes it."""
    if not isinstance(table, dict):
        raise SpecError(f"sweep.{group} must be a table of lists, e.g. [sweep.{group}]")
    axes = {}
    for key, values in table.items():
        where = f"sweep.{group}.{key}"
        params = [p for w in workloads for p in workload(w).params(group) if p.name == key]
        if not params:
            other = [w for w in workloads for p in workload(w).params(_other(group))
                     if p.name == key]
            hint = f" ({key} is a {_other(group)} parameter)" if other else ""
            known = "; ".join(f"{w}: {', '.join(p.name for p in workload(w).params(group))}"
                              for w in workloads)
            raise SpecError(f"unknown key {where}{hint}; {group} parameters of {known}")
        if not isinstance(values, list):
            raise SpecError(f"{where} = {values!r}: expected a list of values, e.g. "
                            f"{key} = [{values!r}]")
        if not values:
            raise SpecError(f"{where} is empty; give at least one value")
        for i, value in enumerate(values):
            for param in params:
                try:
                    param.check(value, f"{where}[{i}]")
                except ValueError as err:
                    raise SpecError(str(err)) from None
        axes[key] = tuple(dict.fromkeys(values))
    return axes


def _other(group: str) -> str:
    return GROUPS[1 - GROUPS.index(group)]


def measurements(report: Report) -> dict[str, float | int]:
    """The results columns of a point's report (per-engine utilisation, HBM bytes, ...)."""
    core = report.cores[0]
    engines = {f"util_{name}": stats.utilization for name, stats in core.engines.items()}
    return {"latency_ns": report.latency_ns, "tensor_hfu": report.tensor_hfu,
            **{column: engines.get(column, 0.0) for column in ENGINE_COLUMNS},
            "hbm_read_bytes": core.memory["hbm_read_bytes"],
            "hbm_write_bytes": core.memory["hbm_write_bytes"],
            "instructions": sum(e.instructions for e in core.engines.values()),
            "flops": report.flops}


def run_point(point: Point, instance: InstanceSpec) -> dict[str, Value | float]:
    """Build and time one point (timing-only); an invalid point is a row with its error."""
    row: dict[str, Value | float] = point.row()
    start = time.perf_counter()
    try:
        program = workload(point.workload).program(dict(point.shape), dict(point.layout),
                                                   instance.chip.core.target)
        report = run(program, machine=instance, functional=False).report
    except Exception as err:  # a point that cannot run is a result of the sweep, not its end
        row.update(status="error", error=f"{type(err).__name__}: {err}".replace("\n", " | "))
    else:
        row.update(status="ok", **measurements(report))
    row["emulation_s"] = round(time.perf_counter() - start, 4)
    return row


@dataclass
class SweepSummary:
    """What one call of `run_sweep` did."""

    output: Path
    total: int  # points in the spec
    skipped: int  # already in the results file
    computed: int = 0  # run by this call (ok or error)
    failed: int = 0  # of those, how many recorded an error
    interrupted: bool = False
    errors: Counter = field(default_factory=Counter)  # error message -> points


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM under `ncemu sweep`) during a sweep; carries what was saved."""

    def __init__(self, summary: SweepSummary) -> None:
        super().__init__(f"sweep interrupted: {summary.computed} points computed")
        self.summary = summary


def default_workers() -> int:
    """The CPUs this process may run on: the process pool's size unless told otherwise."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; the parent alone decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def executor(workers: int | None = None,
             scheduler: str | None = None) -> Iterator[tuple[Executor, int]]:
    """A `concurrent.futures.Executor` and how many tasks it runs at once: a local process pool
    of `workers` (default: one per CPU), or the Dask cluster at `scheduler`."""
    if scheduler is not None:
        try:
            from distributed import Client
        except ImportError:
            raise SweepError("--scheduler needs dask.distributed: "
                             "pip install 'ncemu[sweep]'") from None
        try:
            client = Client(scheduler)
        except OSError as err:  # refused, or timed out (distributed.comm.timeouts.connect)
            raise SweepError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
        with client:
            slots = sum(client.nthreads().values())
            # pure=False: each submission is a task of its own, as in a process pool.
            yield client.get_executor(pure=False), max(1, slots)
        return
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                               initializer=_ignore_sigint)
    try:
        yield pool, workers
    finally:
        # run_sweep cancels what it submitted; shutdown(cancel_futures=True) can deadlock on
        # Python 3.11 after a task failed to pickle (CPython issue 116685).
        pool.shutdown(wait=True)


def run_sweep(spec: SweepSpec | str | Path, output: str | Path, *, workers: int | None = None,
              scheduler: str | None = None, resume: bool = True, retry_failed: bool = False,
              limit: int | None = None, progress: TextIO | None = sys.stderr) -> SweepSummary:
    """Run every point of `spec` not yet in the CSV file `output`, appending a row per point as
    it completes.  `resume=False` starts the file afresh; `retry_failed` reruns points whose row
    is an error; `limit` computes at most that many points.  Points run on a process pool of
    `workers`, or on the Dask cluster at the address `scheduler`."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    output = Path(output)
    columns = spec.columns()
    points = spec.points()
    recorded = _prepare_output(output, columns, resume, retry_failed)
    todo = [p for p in points if p.id not in recorded]
    summary = SweepSummary(output, len(points), len(points) - len(todo))
    if limit is not None:
        todo = todo[:max(0, limit)]
    if not todo:
        return summary
    bar = Progress(len(todo), summary.skipped, progress)
    with open(output, "a", newline="") as results, executor(workers, scheduler) as (pool, slots):
        writer = csv.DictWriter(results, columns, restval="")
        pending: dict[Future, Point] = {}
        queue = iter(todo)
        try:
            while True:
                # Keep a few tasks per slot in flight: enough to stay busy, few to cancel.
                for point in itertools.islice(queue, 4 * slots - len(pending)):
                    future = pool.submit(run_point, point, spec.machines[point.machine])
                    pending[future] = point
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    point = pending.pop(future)
                    try:
                        row = future.result()
                    except Exception as err:
                        raise SweepError(f"point {point.id} could not run ({type(err).__name__}: "
                                         f"{err}); {summary.computed} results saved in {output}, "
                                         f"rerun to resume") from err
                    writer.writerow(row)
                    results.flush()
                    summary.computed += 1
                    if row["status"] != "ok":
                        summary.failed += 1
                        summary.errors[row["error"]] += 1
                    bar.update(row["status"] != "ok")
        except KeyboardInterrupt:
            summary.interrupted = True
            raise SweepInterrupted(summary) from None
        finally:
            for future in pending:
                future.cancel()
            bar.close()
    return summary


def _prepare_output(path: Path, columns: list[str], resume: bool,
                    retry_failed: bool) -> dict[str, str]:
    """Make `path` a results file with `columns`; the status of each point already in it."""
    if not resume or not path.exists() or path.stat().st_size == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as results:
            csv.writer(results).writerow(columns)
        return {}
    _drop_torn_row(path)
    with open(path, newline="") as results:
        reader = csv.DictReader(results)
        header = reader.fieldnames or []
        rows = list(reader)
    if header != columns:
        raise SweepError(f"{path} holds the results of another sweep (columns "
                         f"{', '.join(header)}; this sweep writes {', '.join(columns)}); give "
                         f"another output file or --no-resume to overwrite it")
    if retry_failed and any(row["status"] != "ok" for row in rows):
        rows = [row for row in rows if row["status"] == "ok"]
        partial = path.with_name(path.name + ".partial")
        with open(partial, "w", newline="") as results:
            writer = csv.DictWriter(results, columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, path)
    return {row["id"]: row["status"] for row in rows}


def _drop_torn_row(path: Path) -> None:
    """Cut a last row that a killed sweep left half-written (every row is one line)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as results:
            results.truncate(data.rfind(b"\n") + 1)


def load_results(path: str | Path) -> list[dict[str, Value | float | None]]:
    """The rows of a results file sorted by point id, numbers as numbers, empty cells None."""
    with open(path, newline="") as results:
        rows = {row["id"]: row for row in csv.DictReader(results)}
    return [{key: _cell(key, value) for key, value in rows[point].items()}
            for point in sorted(rows)]


def _cell(column: str, text: str) -> Value | float | None:
    if column in _TEXT_COLUMNS:
        return text
    if text == "":
        return None
    if column in _FLOAT_COLUMNS:
        return float(text)
    if column in _INT_COLUMNS:
        return int(text)
    try:  # a parameter: int-valued ones read back as ints
        return int(text)
    except ValueError:
        return text


class Progress:
    """A one-line text progress bar on a stream: points done, failures, rate and ETA.

    On a terminal it redraws in place; elsewhere (logs, CI) it prints a line every few seconds."""

    WIDTH = 30

    def __init__(self, total: int, skipped: int, stream: TextIO | None) -> None:
        self.total, self.skipped, self.stream = total, skipped, stream
        self.done = self.failed = 0
        self.start = self.last = time.monotonic()
        self.tty = stream is not None and stream.isatty()

    def update(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        now = time.monotonic()
        if now - self.last >= (0.1 if self.tty else 5.0) or self.done == self.total:
            self.last = now
            self._draw(now)

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate else float("inf")
        filled = self.WIDTH * self.done // max(self.total, 1)
        skipped = f", {self.skipped} already done" if self.skipped else ""
        return (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} points"
                f" ({self.failed} failed{skipped}) {rate:.2f} pt/s ETA {_clock(eta)}")

    def _draw(self, now: float) -> None:
        if self.stream is None:
            return
        self.stream.write(("\r" if self.tty else "") + self.line(now) + ("" if self.tty else "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
