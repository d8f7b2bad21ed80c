"""The cyclic garbage collector is paused while a run walks a program, then restored."""

from __future__ import annotations

import gc

import pytest

from emulator.collector import collector_paused
from emulator.runner import run
from kernels.programs import tiled_matmul, tiled_matmul_inputs


@pytest.mark.parametrize("enabled", [True, False])
def test_a_pause_restores_the_collector_as_it_found_it_even_after_an_error(enabled):
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        with collector_paused():
            assert not gc.isenabled()
            with collector_paused():  # nested: the inner exit must not re-enable early
                pass
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
        with pytest.raises(RuntimeError, match="inside"), collector_paused():
            raise RuntimeError("inside")
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def test_a_run_pauses_the_collector_and_enables_it_again(monkeypatch):
    import emulator.runner

    states = []
    build_report = emulator.runner.build_report

    def watched(*args, **kwargs):
        states.append(gc.isenabled())
        return build_report(*args, **kwargs)

    monkeypatch.setattr(emulator.runner, "build_report", watched)
    program = tiled_matmul(128, 128, 512)
    assert gc.isenabled()
    result = run(program, tiled_matmul_inputs(program))
    assert states == [False]  # paused while the run worked
    assert gc.isenabled() and "result" in result.outputs
