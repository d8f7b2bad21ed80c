"""The functional NeuronCore: executes a Program's values, one instruction at a time.

Streams are interleaved in a legal order, one that respects every semaphore wait; a race-free
program computes the same values under every legal order (the property tests pick random ones).
Each instruction reads its operands, applies the opcode's semantics function from the opcode
table, and writes results cast to the destination dtype.  No timing is computed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from emulator.memory import DeviceMemory, OnChipMemory
from isa.dtypes import cast
from isa.instructions import Instruction, Signal, Wait
from isa.program import Program
from isa.target import Space, Target


class DeadlockError(RuntimeError):
    """No stream can make progress: every unfinished stream waits on a semaphore."""


class FunctionalCore:
    """SBUF and PSUM of one core, attached to its chip's device memory."""

    def __init__(self, target: Target, hbm: DeviceMemory, check_initialized: bool = True) -> None:
        self.target = target
        self.hbm = hbm
        self.check_initialized = check_initialized
        self.memories = {Space.SBUF: OnChipMemory(Space.SBUF, target),
                         Space.PSUM: OnChipMemory(Space.PSUM, target), Space.HBM: hbm}

    def execute(self, instr: Instruction) -> None:
        spec = instr.spec()
        if spec.collective:
            raise ValueError(f"{instr.opcode} involves several cores: run the programs together "
                             f"with emulator.system.run_system")
        values = {name: self.memories[ap.space].read(ap, self.check_initialized)
                  for name, ap in instr.reads().items()}
        self.write_results(instr, spec.semantics(instr, values))

    def write_results(self, instr: Instruction, results: dict[str, np.ndarray]) -> None:
        """Store an instruction's computed values, cast to each destination's dtype."""
        for name, result in results.items():
            ap = getattr(instr, name)
            self.memories[ap.space].write(ap, cast(np.asarray(result).reshape(ap.shape), ap.dtype))


def legal_order(program: Program, rng: np.random.Generator | None = None
                ) -> Iterator[tuple[str, int]]:
    """Yield (stream, index) in an order that respects every semaphore.

    Without `rng` each stream runs until it blocks, then the next one (round robin); with `rng`
    the next instruction comes from a randomly chosen unblocked stream at every step.
    """
    streams = [(s.name, s.instructions) for s in program.streams]
    position = [0] * len(streams)
    counts: dict[int, int] = {}

    def ready(k: int) -> bool:
        name, instructions = streams[k]
        if position[k] >= len(instructions):
            return False
        instr = instructions[position[k]]
        return not isinstance(instr, Wait) or counts.get(instr.sem, 0) >= instr.value

    def step(k: int) -> tuple[str, int]:
        name, instructions = streams[k]
        instr = instructions[position[k]]
        if isinstance(instr, Signal):
            counts[instr.sem] = counts.get(instr.sem, 0) + 1
        position[k] += 1
        return name, position[k] - 1

    while True:
        runnable = [k for k in range(len(streams)) if ready(k)]
        if not runnable:
            break
        if rng is None:
            for k in runnable:
                while ready(k):
                    yield step(k)
        else:
            yield step(int(rng.choice(runnable)))
    blocked = [f"{name}[{position[k]}] {instructions[position[k]]}"
               for k, (name, instructions) in enumerate(streams)
               if position[k] < len(instructions)]
    if blocked:
        raise DeadlockError("program deadlocks; blocked: " + "; ".join(blocked))


def checked_order(program: Program, order: list[tuple[str, int]]) -> Iterator[tuple[str, int]]:
    """Yield a given order after checking that it is legal: each stream in sequence, every
    instruction exactly once, and no wait before the signals it needs."""
    streams = {s.name: s.instructions for s in program.streams}
    position = dict.fromkeys(streams, 0)
    counts: dict[int, int] = {}
    for stream, index in order:
        if stream not in streams or index != position[stream]:
            raise ValueError(f"order visits {stream}[{index}] out of sequence")
        instr = streams[stream][index]
        if isinstance(instr, Wait) and counts.get(instr.sem, 0) < instr.value:
            raise ValueError(f"order runs {stream}[{index}] {instr} before its signals")
        if isinstance(instr, Signal):
            counts[instr.sem] = counts.get(instr.sem, 0) + 1
        position[stream] += 1
        yield stream, index
    unfinished = [name for name, instrs in streams.items() if position[name] < len(instrs)]
    if unfinished:
        raise ValueError(f"order leaves streams {unfinished} unfinished")


@dataclass
class FunctionalResult:
    """Output tensors of a functional run and the order its instructions ran in."""

    outputs: dict[str, np.ndarray]
    order: list[tuple[str, int]] = field(repr=False)
    hbm: DeviceMemory = field(repr=False)


def prepare_inputs(program: Program, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check and cast host arrays for every input tensor; missing or extra names raise."""
    declared = {t.name: t for t in program.tensors if t.kind == "input"}
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        raise ValueError(f"inputs {unknown} are not input tensors of program {program.name} "
                         f"(inputs: {sorted(declared)})")
    missing = sorted(set(declared) - set(inputs))
    if missing:
        raise ValueError(f"program {program.name} needs inputs {missing}")
    prepared = {}
    for name, tensor in declared.items():
        array = np.asarray(inputs[name])
        if array.shape != tensor.shape:
            raise ValueError(f"input {name} has shape {array.shape}, program declares "
                             f"{tensor.shape}")
        prepared[name] = cast(array, tensor.dtype)
    return prepared


def execute(program: Program, inputs: dict[str, np.ndarray], target: Target,
            hbm: DeviceMemory | None = None, rng: np.random.Generator | None = None,
            check_initialized: bool = True,
            order: list[tuple[str, int]] | None = None,
            validate: bool = True) -> FunctionalResult:
    """Validate `program`, load `inputs` into HBM, run it, and return its output tensors.

    Streams interleave round robin, randomly with `rng`, or in a given legal `order` (the
    timing model's commit order, so values follow the timed execution).  `validate=False` skips
    the program check when the caller has just made it."""
    if validate:
        program.validate(target)
    hbm = DeviceMemory() if hbm is None else hbm
    prepared = prepare_inputs(program, inputs)
    for tensor in program.tensors:
        hbm.allocate(tensor)
        if tensor.name in prepared:
            hbm.store(tensor.name, prepared[tensor.name])
    core = FunctionalCore(target, hbm, check_initialized)
    streams = {s.name: s.instructions for s in program.streams}
    sequence = legal_order(program, rng) if order is None else checked_order(program, order)
    executed = []
    for stream, index in sequence:
        instr = streams[stream][index]
        try:
            core.execute(instr)
        except Exception as err:
            # Keep the error's type (tests and callers catch it) and say where it happened.
            err.args = (f"{stream}[{index}] {instr}: {err}",)
            raise
        executed.append((stream, index))
    outputs = {t.name: hbm.load(t.name) for t in program.tensors if t.kind == "output"}
    return FunctionalResult(outputs, executed, hbm)
