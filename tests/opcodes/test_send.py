"""send: core A's src goes to core `peer`, matched with the peer's recv of the same tag."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isa import InstructionError, ProgramError, psum, sbuf
from isa.instructions import Recv, Send
from tests.conftest import collective_core, run_cores, validate_alone
from tests.strategies import dtypes, random_values, seeds


@settings(max_examples=8)
@given(st.lists(st.integers(0, 11), min_size=2, max_size=2, unique=True), dtypes(),
       st.integers(0, 9), seeds())
def test_send_delivers_src_to_the_peer(pair, dt, tag, seed):
    sender, receiver = pair
    programs = [collective_core("tx", lambda dst, src: Send(src, receiver, tag), (4, 16), None,
                                dt.name),
                collective_core("rx", lambda dst, src: Recv(dst, sender, tag), None, (4, 16),
                                dt.name)]
    x = random_values(dt, (4, 16), seed)
    outputs = run_cores(programs, [{"x": x}, {}], [sender, receiver])
    words = f"u{dt.itemsize}"
    np.testing.assert_array_equal(outputs[receiver]["y"].view(words), x.view(words))


def test_negative_peer_is_rejected():
    with pytest.raises(InstructionError, match=r"send peer -1 must be a core index >= 0"):
        Send(sbuf(4, 8, "fp32"), -1)


@pytest.mark.parametrize("instr, stream, message", [
    (Send(sbuf(4, 8, "fp32"), 1), "tensor", r"send runs on dma, not on tensor"),
    (Send(psum(4, 8), 1), "dma0", r"send operand src=psum.*: dma cannot use psum here"),
])
def test_validation_errors(instr, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(instr, stream)
