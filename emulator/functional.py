"""The functional NeuronCore: executes a Program's values, one instruction at a time.

Streams are interleaved in a legal order, one that respects every semaphore wait; a race-free
program computes the same values under every legal order (the property tests pick random ones).
Each instruction reads its operands, applies the opcode's semantics function from the opcode
table, and writes results cast to the destination dtype.  No timing is computed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numba
import numpy as np

from emulator.collector import collector_paused
from emulator.memory import DeviceMemory, OnChipMemory
from isa.access import AccessPattern
from isa.dtypes import cast, compute_view
from isa.instructions import Instruction, MatMul, Signal, Wait
from isa.program import InstructionTable, Program
from isa.target import Space, Target

_SYNC = (Wait, Signal)


class DeadlockError(RuntimeError):
    """No stream can make progress: every unfinished stream waits on a semaphore."""


Box = tuple[int, int, int, int]  # partitions [first, end), bytes [low, high) within each


def _box(ap: AccessPattern) -> Box:
    low, high = ap.byte_span()
    return ap.partition_start, ap.partition_end, low, high


def _meet(a: Box, b: Box) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def _union(a: Box | None, b: Box) -> Box:
    if a is None:
        return b
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


@dataclass
class _PendingSum:
    """A PSUM accumulation group not yet computed: dst = base + sum_i S_i.T @ M_i.

    The group becomes one matrix product over its matmuls' operands stacked along K when its
    PSUM region is next read or overwritten, which in a race-free program happens at the same
    point of the program under every legal order.  Operands stay in SBUF until then; a write
    that could change them first copies them into the group (`freeze`), which keeps the
    product the same whenever that write happens.  Products and sums are fp32, as the matmul
    semantics; only the order of the fp32 additions differs from one product per instruction.
    """

    base: np.ndarray | None
    stationary: list[AccessPattern | np.ndarray] = field(default_factory=list)
    moving: list[AccessPattern | np.ndarray] = field(default_factory=list)
    rows: int = 0  # K rows so far
    live: Box | None = None  # SBUF bytes the operands still in SBUF may touch


class FunctionalCore:
    """SBUF and PSUM of one core, attached to its chip's device memory.

    Matmuls that accumulate into one PSUM region are gathered and computed as one product
    (`_PendingSum`); every read and write goes through `read` and `write_results`, which first
    compute the pending sums whose result they touch, or copy the operands they overwrite.
    Stacked operands are kept while their SBUF bytes are unchanged: programs multiply one tile
    into many groups.
    """

    def __init__(self, target: Target, hbm: DeviceMemory, check_initialized: bool = True,
                 max_group_rows: int = 16384, max_stacks: int = 64) -> None:
        self.target = target
        self.hbm = hbm
        self.check_initialized = check_initialized
        self.memories = {Space.SBUF: OnChipMemory(Space.SBUF, target),
                         Space.PSUM: OnChipMemory(Space.PSUM, target), Space.HBM: hbm}
        self.pending: dict[AccessPattern, _PendingSum] = {}
        self.max_group_rows = max_group_rows
        self.stacks: dict[tuple[AccessPattern, ...], tuple[np.ndarray, Box]] = {}
        self.max_stacks = max_stacks

    def execute(self, instr: Instruction) -> None:
        if type(instr) in _SYNC:  # ordering is the interleaving's business; no values
            return
        spec = instr.spec()
        if spec.collective:
            raise ValueError(f"{instr.opcode} involves several cores: run the programs together "
                             f"with emulator.system.run_system")
        if type(instr) is MatMul:
            self._matmul(instr)
            return
        values = {name: self.read(ap) for name, ap in instr.reads().items()}
        self.write_results(instr, spec.semantics(instr, values))

    def read(self, ap: AccessPattern) -> np.ndarray:
        """The current values of an operand (a view of the memory)."""
        if self.pending and ap.space is Space.PSUM:
            self._land(_box(ap))
        return self.memories[ap.space].read(ap, self.check_initialized)

    def write_results(self, instr: Instruction, results: dict[str, np.ndarray]) -> None:
        """Store an instruction's computed values, cast to each destination's dtype."""
        for name, result in results.items():
            ap = getattr(instr, name)
            self._before_write(ap)
            self.memories[ap.space].write(ap, cast(np.asarray(result).reshape(ap.shape), ap.dtype))

    def settle(self) -> None:
        """Compute every pending accumulation into PSUM."""
        for dst in list(self.pending):
            self._compute(dst)

    def _before_write(self, ap: AccessPattern) -> None:
        if ap.space is Space.HBM:
            return
        box = _box(ap)
        if ap.space is Space.PSUM:
            if self.pending:
                self._land(box)
            return
        for group in self.pending.values():
            if group.live is not None and _meet(group.live, box):
                self._freeze(group)
        for key in [k for k, (_, b) in self.stacks.items() if _meet(b, box)]:
            del self.stacks[key]

    def _freeze(self, group: _PendingSum) -> None:
        """Copy the operands a group still reads from SBUF into the group."""
        group.stationary = [self._stack(group.stationary)]
        group.moving = [self._stack(group.moving)]
        group.live = None

    def _matmul(self, instr: MatMul) -> None:
        sbuf = self.memories[Space.SBUF]
        sbuf.read(instr.stationary, self.check_initialized)  # checks bounds and initialisation
        sbuf.read(instr.moving, self.check_initialized)
        group = self.pending.get(instr.dst) if instr.accumulate else None
        if group is None or group.rows >= self.max_group_rows:
            base = self.read(instr.dst).copy() if instr.accumulate else None
            self._land(_box(instr.dst))  # an overwrite ends every group it meets
            group = self.pending[instr.dst] = _PendingSum(base)
        group.stationary.append(instr.stationary)
        group.moving.append(instr.moving)
        group.rows += instr.stationary.partitions
        group.live = _union(_union(group.live, _box(instr.stationary)), _box(instr.moving))

    def _land(self, region: Box) -> None:
        """Compute the pending sums whose PSUM region meets `region`."""
        for dst in [d for d in self.pending if _meet(_box(d), region)]:
            self._compute(dst)

    def _compute(self, dst: AccessPattern) -> None:
        group = self.pending.pop(dst)
        product = self._stack(group.stationary).T @ self._stack(group.moving)
        if group.base is not None:
            product += compute_view(group.base).reshape(product.shape)
        self.memories[Space.PSUM].write(dst, product.reshape(dst.shape))

    def _stack(self, parts: list[AccessPattern | np.ndarray]) -> np.ndarray:
        """Operands stacked along K as fp32 [sum K, F]; a stack of SBUF tiles is kept for
        reuse while their bytes are unchanged."""
        if len(parts) == 1 and isinstance(parts[0], np.ndarray):
            return parts[0]
        tiles = all(isinstance(part, AccessPattern) for part in parts)
        if tiles and (found := self.stacks.get(tuple(parts))) is not None:
            return found[0]
        sbuf = self.memories[Space.SBUF]
        stack = np.empty((sum(len(p) if isinstance(p, np.ndarray) else p.partitions
                              for p in parts), _free_size(parts[0])), np.float32)
        row, box = 0, None
        for part in parts:
            if isinstance(part, np.ndarray):
                stack[row:row + len(part)] = part
                row += len(part)
                continue
            stack[row:row + part.partitions] = sbuf.read(part, False).reshape(part.partitions, -1)
            row += part.partitions
            box = _union(box, _box(part))
        if tiles:
            if len(self.stacks) >= self.max_stacks:
                del self.stacks[next(iter(self.stacks))]
            self.stacks[tuple(parts)] = (stack, box)
        return stack


def _free_size(part: AccessPattern | np.ndarray) -> int:
    return part.shape[1] if isinstance(part, np.ndarray) else part.free_size


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


def round_robin(table: InstructionTable) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """`legal_order`'s default order over a program's table, compiled: each row's place in it,
    its epoch, the vector clock of each epoch, and how many rows were placed (fewer than all:
    the program deadlocks)."""
    return _round_robin(table.stream_first, table.code, table.slot, table.n_slots)


@numba.njit(cache=True)
def _round_robin(stream_first, code, slot, n_slots):  # pragma: no cover - compiled
    """Run the streams in `legal_order`'s round-robin order, recording each row's place in it,
    its epoch (the clock row in force) and, per epoch, the vector clock: for every stream, how
    many of its leading instructions happen before (what the race detector needs).  Returns
    the rows placed; fewer than all means a deadlock."""
    n_streams = stream_first.shape[0] - 1
    n = code.shape[0]
    n_waits = 0
    for i in range(n):
        n_waits += code[i] == 1
    clocks = np.zeros((n_waits + 1, n_streams), np.int64)  # epoch 0: nothing before a start
    signal_epoch = np.full(n_slots, -1, np.int64)  # clock row a signal snapshot extends
    signal_index = np.zeros(n_slots, np.int64)  # ... and the signal's own index + 1
    position = np.full(n, -1, np.int64)  # -1: not placed (the program deadlocks first)
    epoch = np.zeros(n, np.int64)
    current = np.zeros(n_streams, np.int64)
    pos = stream_first[:-1].copy()
    runnable = np.zeros(n_streams, np.bool_)
    epochs = 1
    placed = 0
    while True:
        # As legal_order: each round runs the streams ready at its start, each until it blocks.
        for k in range(n_streams):
            i = pos[k]
            runnable[k] = i < stream_first[k + 1] and (code[i] != 1
                                                       or signal_epoch[slot[i]] >= 0)
        if not runnable.any():
            break
        for k in range(n_streams):
            if not runnable[k]:
                continue
            while pos[k] < stream_first[k + 1]:
                i = pos[k]
                if code[i] == 1:  # WAIT: merge the clock of the signal it needs
                    s = slot[i]
                    if signal_epoch[s] < 0:
                        break
                    for j in range(n_streams):
                        clocks[epochs, j] = max(clocks[current[k], j], clocks[signal_epoch[s], j])
                    owner = np.searchsorted(stream_first, signal_index[s] - 1, side="right") - 1
                    clocks[epochs, owner] = max(clocks[epochs, owner],
                                                signal_index[s] - stream_first[owner])
                    current[k] = epochs
                    epochs += 1
                epoch[i] = current[k]
                if code[i] == 2:  # SIGNAL: it waits for itself and all before it
                    signal_epoch[slot[i]] = current[k]
                    signal_index[slot[i]] = i + 1
                position[i] = placed
                placed += 1
                pos[k] += 1
    return position, epoch, clocks[:epochs], placed



def default_order(program: Program) -> tuple[list[tuple[str, int]], bool]:
    """The (stream, index) pairs of `legal_order(program)` and whether they are all of the
    program (False: it deadlocks after them)."""
    table = program.table
    position, _, _, placed = round_robin(table)
    ran = np.flatnonzero(position >= 0)
    rows = np.empty(placed, np.int64)
    rows[position[ran]] = ran
    stream = table.stream_of[rows]
    names = [s.name for s in program.streams]
    return (list(zip(map(names.__getitem__, stream.tolist()),
                     (rows - table.stream_first[stream]).tolist())), placed == len(position))


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


@collector_paused()
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
    finishes = True
    if order is not None:
        sequence = checked_order(program, order)
    elif rng is not None:
        sequence = legal_order(program, rng)
    else:  # the default interleaving, worked out in one compiled pass
        sequence, finishes = default_order(program)
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
    if not finishes:
        for _ in legal_order(program):  # raises DeadlockError naming the blocked streams
            pass
        raise RuntimeError(f"the compiled order stopped after {len(executed)} instructions of "
                           f"{program.name}, yet the program finishes")  # pragma: no cover
    core.settle()
    outputs = {t.name: hbm.load(t.name) for t in program.tensors if t.kind == "output"}
    return FunctionalResult(outputs, executed, hbm)
