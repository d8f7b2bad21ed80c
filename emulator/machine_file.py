"""Machine files: instances, chips and cores as TOML, so a user can describe a what-if machine.

A file may start from a preset and override a few keys:

    base = "inf2.xlarge"
    [instance]
    name = "inf2-half-hbm"
    [chip]
    hbm_gbps = 410.0

or give every key (what `dump_machine` writes).  Sections: `[instance]`, `[chip]`, `[core]`,
`[core.target]` (architecture limits; SBUF and PSUM as totals over the partitions), each with an
optional `sources` table.  Unknown keys, wrong types and inconsistent values are rejected with a
message naming the key.  Files are data: read with tomllib, never executed.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

import tomli_w

from emulator.machine import InstanceSpec, instance_spec
from isa.target import Engine, Target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class MachineFileError(ValueError):
    """A machine file that cannot describe a machine; the message names the key."""


# Target fields stored per partition in the record but as totals in the file.
_TOTALS = {"sbuf_bytes": "sbuf_partition_bytes", "psum_bytes": "psum_partition_bytes"}


def _target_table(target: Target) -> dict:
    table = {}
    for f in dataclasses.fields(target):
        value = getattr(target, f.name)
        if f.name == "engines":
            table["engines"] = [e.value for e in value]
        elif f.name in _TOTALS.values():
            total = next(k for k, v in _TOTALS.items() if v == f.name)
            table[total] = value * target.partitions
        else:
            table[f.name] = value
    return table


def _record_table(record, skip: tuple[str, ...]) -> dict:
    table = {}
    for f in dataclasses.fields(record):
        if f.name in skip or f.name == "sources":
            continue
        value = getattr(record, f.name)
        table[f.name] = list(value) if isinstance(value, tuple) else value
    if record.sources:
        table["sources"] = dict(record.sources)
    return table


def machine_tables(instance: InstanceSpec) -> dict:
    """The TOML document of an instance: every key of every level."""
    core = _record_table(instance.chip.core, ("target",))
    core["target"] = _target_table(instance.chip.core.target)
    return {"instance": _record_table(instance, ("chip",)),
            "chip": _record_table(instance.chip, ("core",)), "core": core}


def dump_machine(instance: InstanceSpec) -> str:
    return tomli_w.dumps(machine_tables(instance))


def save_machine(instance: InstanceSpec, path: str | Path) -> None:
    Path(path).write_text(dump_machine(instance))


def _coerce(section: str, key: str, value, hint, current):
    """Check a value from the file against the field's type; ints may stand for floats."""
    where = f"{section}.{key}"
    kind = type(current)
    if kind is bool or isinstance(value, bool) and kind is not bool:
        raise MachineFileError(f"{where} = {value!r}: expected {kind.__name__}")
    if kind is float and isinstance(value, int):
        return float(value)
    if kind is tuple and isinstance(value, list):
        return tuple(value)
    if not isinstance(value, kind):
        raise MachineFileError(f"{where} = {value!r}: expected {kind.__name__}, "
                               f"got {type(value).__name__}")
    return value


def _merge(section: str, record, table: dict, skip: tuple[str, ...] = (),
           inherit_sources: bool = True) -> dict:
    """Field values of `record` updated from `table`; unknown keys raise naming the key.

    A `sources` table adds to the base's sources when the file names a `base`, and replaces
    them when the file describes the whole machine."""
    names = {f.name for f in dataclasses.fields(record)} - set(skip)
    hints = typing.get_type_hints(type(record))
    changes = {}
    for key, value in table.items():
        if key == "sources":
            if not isinstance(value, dict):
                raise MachineFileError(f"{section}.sources must be a table of strings")
            given = {str(k): str(v) for k, v in value.items()}
            changes["sources"] = {**record.sources, **given} if inherit_sources else given
            continue
        if key not in names:
            known = ", ".join(sorted(names - {"sources"}))
            raise MachineFileError(f"unknown key {section}.{key}; known keys: {known}")
        changes[key] = _coerce(section, key, value, hints[key], getattr(record, key))
    return changes


def _target_from(table: dict, base: Target) -> Target:
    table = dict(table)
    partitions = table.get("partitions", base.partitions)
    if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
        raise MachineFileError(f"core.target.partitions = {partitions!r} must be a positive int")
    for total, per in _TOTALS.items():
        if total in table:
            value = table.pop(total)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MachineFileError(f"core.target.{total} = {value!r} must be a positive int")
            if value % partitions:
                raise MachineFileError(f"core.target.{total} = {value} is not divisible by "
                                       f"core.target.partitions = {partitions}")
            table[per] = value // partitions
        elif per in table:
            raise MachineFileError(f"unknown key core.target.{per}; give core.target.{total}")
        elif "partitions" in table:
            table[per] = getattr(base, per) * base.partitions // partitions
    if "engines" in table:
        engines = table.pop("engines")
        try:
            table["engines"] = tuple(Engine(e) for e in engines)
        except (ValueError, TypeError):
            raise MachineFileError(f"core.target.engines = {engines!r}: each must be one of "
                                   f"{', '.join(e.value for e in Engine)}") from None
    changes = _merge("core.target", base, {k: v for k, v in table.items() if k != "engines"})
    if "engines" in table:
        changes["engines"] = table["engines"]
    return dataclasses.replace(base, **changes)


def load_machine_text(text: str, origin: str = "<machine>") -> InstanceSpec:
    """Parse a machine file's text into an InstanceSpec."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise MachineFileError(f"{origin}: not valid TOML: {err}") from None
    try:
        return _build(doc)
    except MachineFileError as err:
        raise MachineFileError(f"{origin}: {err}") from None
    except ValueError as err:
        raise MachineFileError(f"{origin}: {err}") from None


def _build(doc: dict) -> InstanceSpec:
    unknown = set(doc) - {"base", "instance", "chip", "core"}
    if unknown:
        raise MachineFileError(f"unknown key {sorted(unknown)[0]}; top-level keys: base, "
                               f"[instance], [chip], [core]")
    if "base" in doc:
        if not isinstance(doc["base"], str):
            raise MachineFileError(f"base = {doc['base']!r} must name a preset instance")
        base = instance_spec(doc["base"])
    elif {"instance", "chip", "core"} - set(doc):
        missing = sorted({"instance", "chip", "core"} - set(doc))
        raise MachineFileError(f"a machine file without `base` needs every section; missing "
                               f"[{'], ['.join(missing)}]")
    else:
        base = instance_spec("inf2.xlarge")
    for section in ("instance", "chip", "core"):
        if section in doc and not isinstance(doc[section], dict):
            raise MachineFileError(f"{section} must be a table")
    inherit = "base" in doc
    core_table = dict(doc.get("core", {}))
    target_table = core_table.pop("target", {})
    target = _target_from(target_table, base.chip.core.target)
    core = dataclasses.replace(
        base.chip.core, target=target,
        **_merge("core", base.chip.core, core_table, ("target",), inherit))
    chip = dataclasses.replace(
        base.chip, core=core, **_merge("chip", base.chip, doc.get("chip", {}), ("core",), inherit))
    return dataclasses.replace(
        base, chip=chip, **_merge("instance", base, doc.get("instance", {}), ("chip",), inherit))


def load_machine(path: str | Path) -> InstanceSpec:
    path = Path(path)
    if not path.is_file():
        raise MachineFileError(f"no machine file at {path}")
    return load_machine_text(path.read_text(), str(path))


def machine(value: str | Path | InstanceSpec) -> InstanceSpec:
    """An instance from a preset name (`inf2.xlarge`, `inf1`) or a `.toml` machine file."""
    if isinstance(value, InstanceSpec):
        return value
    if str(value).endswith(".toml"):
        return load_machine(value)
    return instance_spec(str(value))
