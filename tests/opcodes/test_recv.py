"""recv: dst receives what core `peer` sends with the same tag (cast to dst's dtype)."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.system import CollectiveError
from isa import DmaCopy, InstructionError, ProgramBuilder, ProgramError, hbm, psum, sbuf
from isa.instructions import Recv, Send
from tests.conftest import collective_core, run_cores, validate_alone


def test_tags_pair_sends_with_receives():
    """Core 0 sends tile a with tag 1, then tile b with tag 2, from one queue; core 3 receives
    them on two queues, tag 2 listed first, into fp32 tiles (the bf16 values are cast).  A send
    and its recv meet like a rendezvous, so the tag, not the listing order, pairs them."""
    tx = ProgramBuilder("tx")
    tx.tensor("a", (2, 8), "bf16", "input")
    tx.tensor("b", (2, 8), "bf16", "input")
    tx.emit("dma0", DmaCopy(sbuf(2, 8, "bf16"), hbm("a", 2, 8, 8, "bf16")))
    tx.emit("dma0", DmaCopy(sbuf(2, 8, "bf16", offset=64), hbm("b", 2, 8, 8, "bf16")))
    tx.sync("dma0", "dma1", tx.semaphore())
    tx.emit("dma1", Send(sbuf(2, 8, "bf16"), 3, tag=1))
    tx.emit("dma1", Send(sbuf(2, 8, "bf16", offset=64), 3, tag=2))
    rx = ProgramBuilder("rx")
    rx.tensor("ya", (2, 8), "fp32", "output")
    rx.tensor("yb", (2, 8), "fp32", "output")
    rx.emit("dma1", Recv(sbuf(2, 8, "fp32", offset=128), 0, tag=2))
    rx.emit("dma2", Recv(sbuf(2, 8, "fp32"), 0, tag=1))
    rx.sync("dma1", "dma0", rx.semaphore())
    rx.sync("dma2", "dma0", rx.semaphore())
    rx.emit("dma0", DmaCopy(hbm("ya", 2, 8, 8, "fp32"), sbuf(2, 8, "fp32")))
    rx.emit("dma0", DmaCopy(hbm("yb", 2, 8, 8, "fp32"), sbuf(2, 8, "fp32", offset=128)))
    a = np.arange(16, dtype=np.float32).reshape(2, 8) + 0.5
    b = -np.arange(16, dtype=np.float32).reshape(2, 8)
    outputs = run_cores([tx.build(), rx.build()], [{"a": a, "b": b}, {}], [0, 3])
    np.testing.assert_array_equal(outputs[3]["ya"], a)
    np.testing.assert_array_equal(outputs[3]["yb"], b)


def test_negative_peer_is_rejected():
    with pytest.raises(InstructionError, match=r"recv peer -2 must be a core index >= 0"):
        Recv(sbuf(4, 8, "fp32"), -2)


@pytest.mark.parametrize("instr, stream, message", [
    (Recv(sbuf(4, 8, "fp32"), 1), "sync", r"recv runs on dma, not on sync"),
    (Recv(psum(4, 8), 1), "dma5", r"recv operand dst=psum.*: dma cannot use psum here"),
    (Recv(sbuf(4, 8, "fp32", offset=192 * 1024 - 4), 1), "dma5",
     r"recv operand dst: .*fall outside the 196608-byte sbuf partition"),
])
def test_validation_errors(instr, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(instr, stream)


@pytest.mark.parametrize("send", [Send(sbuf(2, 8, "fp32"), 5, tag=4),
                                  Send(sbuf(2, 8, "fp32"), 0, tag=3)])
def test_a_recv_without_its_send_is_an_error(send):
    programs = [collective_core("rx", lambda dst, src: Recv(dst, 1, tag=4), None, (2, 8)),
                collective_core("tx", lambda dst, src: send, (2, 8), None)]
    with pytest.raises(CollectiveError, match=r"core 0 dma1\[0\] recv .* peer=1 tag=4: no "
                                              r"matching instruction on core\(s\) \[1\]"):
        run_cores(programs, [{}, {"x": np.zeros((2, 8))}], [0, 1])
