"""Every library kernel traces to race-free programs: `emulator.races.check_races` finds no
unordered conflicting accesses and no PSUM accumulation hazard, for the default layout and for
every allowed value of each layout parameter (one at a time)."""

from __future__ import annotations

import pytest

from emulator.kernel_runner import trace
from emulator.races import check_races, find_accumulation_hazards, find_races
from kernels.library import LIBRARY
from tests.library.test_golden import small_shape

# One entry per kernel function: the element-wise entries share two kernels.
DISTINCT = sorted({entry.kernel.name: name for name, entry in LIBRARY.items()}.values())


def _programs(name: str, layout: dict | None = None, dtype: str = "bf16"):
    entry = LIBRARY[name]
    arrays = entry.inputs(small_shape(name), dtype=dtype)
    traced = trace(entry.kernel, *arrays, **entry.kernel_kwargs(layout=layout))
    return traced if isinstance(traced, tuple) else (traced,)


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_default_layout_is_race_free(name):
    for program in _programs(name):
        check_races(program)
        assert find_races(program, limit=None) == []
        assert find_accumulation_hazards(program, limit=None) == []


def _layout_cases():
    cases = []
    for name in DISTINCT:
        for param in LIBRARY[name].layout:
            cases += [(name, {param.name: value}) for value in param.allowed
                      if value != param.default]
    return cases


# Layout values the small test shape cannot take (blocks larger than the shape) are left out.
TOO_BIG = {("matmul", "TILES_IN_BLOCK_M", 4), ("matmul", "TILES_IN_BLOCK_M", 8),
           ("matmul", "TILES_IN_BLOCK_M", 16), ("matmul", "TILES_IN_BLOCK_N", 2),
           ("matmul", "TILES_IN_BLOCK_N", 4), ("matmul", "TILES_IN_BLOCK_K", 8),
           ("matmul", "TILES_IN_BLOCK_K", 16), ("matmul_blocked", "TILES_IN_BLOCK_M", 4),
           ("matmul_blocked", "TILES_IN_BLOCK_M", 8), ("matmul_blocked", "TILES_IN_BLOCK_N", 2),
           ("matmul_blocked", "TILES_IN_BLOCK_N", 4)}


@pytest.mark.parametrize("name, layout", [
    case for case in _layout_cases()
    if (case[0], *next(iter(case[1].items()))) not in TOO_BIG])
def test_every_layout_is_race_free(name, layout):
    for program in _programs(name, layout):
        check_races(program)
