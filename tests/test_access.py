"""Access patterns (construction, architecture checks, text form, spans), the partition rule of
`Target`, and the memories that resolve patterns to bytes (SBUF/PSUM and HBM).

The reference for which element a pattern touches is `element_indices` in conftest: the
definition written out with np.indices, independent of the memories' numpy stride tricks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.memory import (
    DeviceMemory,
    MemoryAccessError,
    OnChipMemory,
    UninitializedReadError,
)
from isa import INF2, AccessPattern, DmaCopy, DramTensor, Space, Target, hbm, psum, sbuf
from tests.conftest import element_indices
from tests.strategies import (
    access_patterns,
    dense_tiles,
    dram_tensors,
    hbm_patterns,
    legal_partition_starts,
    random_values,
    seeds,
)

on_chip_spaces = st.sampled_from([Space.SBUF, Space.PSUM])


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(np.ascontiguousarray(actual).view(np.uint8),
                                  np.ascontiguousarray(expected).view(np.uint8))


# ---- the partition rule -------------------------------------------------------------------
def test_partition_rule_matches_its_statement_everywhere():
    for count in range(0, 131):
        for start in range(-1, 131):
            legal = (1 <= count <= 128 and start + count <= 128
                     and start in legal_partition_starts(count))
            if legal:
                INF2.check_partition_range(start, count)
            else:
                with pytest.raises(ValueError):
                    INF2.check_partition_range(start, count)


@pytest.mark.parametrize("start, count, message", [
    (0, 129, r"partition count 129 is outside 1\.\.128"),
    (0, 0, r"partition count 0 is outside 1\.\.128"),
    (120, 16, r"partitions 120\.\.135 exceed the 128 partitions"),
    (32, 48, r"an operand of 48 partitions may start at partition \(0, 64\), not 32"),
    (64, 65, r"partitions 64\.\.128 exceed the 128 partitions"),
    (32, 96, r"an operand of 96 partitions may start at partition \(0,\), not 32"),
    (16, 16, r"an operand of 16 partitions may start at partition \(0, 32, 64, 96\), not 16"),
])
def test_partition_rule_errors_name_value_and_limit(start, count, message):
    with pytest.raises(ValueError, match=message):
        INF2.check_partition_range(start, count)


def test_target_rejects_bad_limits():
    with pytest.raises(ValueError, match=r"Target bad: partitions=0 must be a positive int"):
        dataclasses.replace(INF2, name="bad", partitions=0)
    with pytest.raises(ValueError, match=r"psum_partition_bytes=16384 is not divisible by "
                                         r"psum_banks=3"):
        dataclasses.replace(INF2, name="bad", psum_banks=3)
    with pytest.raises(ValueError, match=r"dma_queues=-1 must be >= 0"):
        dataclasses.replace(INF2, name="bad", dma_queues=-1)


def test_target_numbers_and_streams():
    assert isinstance(INF2, Target)
    assert INF2.psum_bank_bytes == 2048
    assert INF2.partition_bytes(Space.SBUF) == 192 * 1024
    assert INF2.partition_bytes(Space.PSUM) == 16 * 1024
    with pytest.raises(ValueError, match="hbm has no partitions"):
        INF2.partition_bytes(Space.HBM)
    assert INF2.stream_names == ("tensor", "vector", "scalar", "gpsimd", "sync",
                                 *(f"dma{q}" for q in range(16)))


# ---- construction -------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(axes=()), r"an access pattern needs at least one free axis"),
    (dict(axes=((1, 0),)), r"free-axis size 0 must be >= 1 \(axes \[\(1, 0\)\]\)"),
    (dict(partitions=0), r"partition count 0 must be >= 1"),
    (dict(offset=-4), r"byte offset -4 must be >= 0"),
    (dict(offset=6), r"byte offset 6 is not aligned to the fp32 element size \(4 bytes\)"),
    (dict(partition_start=-32), r"partition start -32 must be >= 0"),
    (dict(tensor="x"), r"sbuf operands address partitions, not tensors or rows"),
    (dict(partition_stride=4), r"sbuf operands address partitions, not tensors or rows"),
    (dict(dtype="fp64"), r"unknown dtype 'fp64'"),
    (dict(space="dram"), r"'dram' is not a valid Space"),
])
def test_on_chip_pattern_construction_errors(kwargs, message):
    fields = dict(space=Space.SBUF, dtype="fp32", partition_start=0, partitions=4, offset=0,
                  axes=((1, 8),))
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        AccessPattern(**fields)


@pytest.mark.parametrize("kwargs, message", [
    (dict(tensor=""), r"an HBM access pattern must name its tensor"),
    (dict(partition_start=1), r"HBM rows start at 0 \(offset selects\), got 1"),
    (dict(partition_stride=-8), r"HBM row stride -8 must be >= 0"),
])
def test_hbm_pattern_construction_errors(kwargs, message):
    fields = dict(space=Space.HBM, dtype="bf16", partition_start=0, partitions=4, offset=0,
                  axes=((1, 8),), tensor="a", partition_stride=8)
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        AccessPattern(**fields)


def test_misaligned_offsets_depend_on_the_element_size():
    AccessPattern(Space.SBUF, "bf16", 0, 1, 2, ((1, 4),))
    AccessPattern(Space.SBUF, "fp8_e4m3", 0, 1, 3, ((1, 4),))
    with pytest.raises(ValueError, match=r"byte offset 2 is not aligned to the fp32"):
        AccessPattern(Space.SBUF, "fp32", 0, 1, 2, ((1, 4),))


# ---- architecture checks ----------------------------------------------------------------
@pytest.mark.parametrize("ap, message", [
    (AccessPattern(Space.SBUF, "fp32", 0, 4, 0, ((1, 2),) * 5),
     r"5 free axes exceed the limit of 4"),
    (AccessPattern(Space.SBUF, "bf16", 0, 1, 0, ((1, 65536),)),
     r"axis size 65536 exceeds 65535"),
    (AccessPattern(Space.SBUF, "bf16", 0, 1, 0, ((32768, 2),)),
     r"axis stride 32768 exceeds \+-32767 elements"),
    (AccessPattern(Space.SBUF, "bf16", 0, 1, 100000, ((-32768, 2),)),
     r"axis stride -32768 exceeds \+-32767 elements"),
    (sbuf(129, 8, "fp32"), r"partitions 0\.\.128 exceed the 128 partitions"),
    (sbuf((96, 64), 8, "fp32"), r"partitions 96\.\.159 exceed the 128 partitions"),
    (sbuf(128, 16, "fp32", offset=192 * 1024 - 32),
     r"bytes 196576\.\.196639 fall outside the 196608-byte sbuf partition"),
    (psum(128, 512, "fp32", offset=15 * 1024),
     r"bytes 15360\.\.17407 fall outside the 16384-byte psum partition"),
    (AccessPattern(Space.PSUM, "fp32", 0, 1, 4, ((-1, 3),)),
     r"bytes -4\.\.7 fall outside the 16384-byte psum partition"),
    (AccessPattern(Space.HBM, "fp32", 0, 2, 4, ((-2, 3),), "a", 8),
     r"pattern reaches before the start of tensor a"),
])
def test_check_rejects_illegal_patterns_naming_value_and_limit(ap, message):
    with pytest.raises(ValueError, match=message):
        ap.check(INF2)


@given(on_chip_spaces.flatmap(lambda space: access_patterns(space)))
def test_strategy_patterns_pass_the_architecture_checks(ap):
    ap.check(INF2)
    INF2.check_partition_range(ap.partition_start, ap.partitions)


def test_largest_legal_patterns_pass():
    sbuf(128, 192 * 1024 // 4, "fp32").check(INF2)
    psum(128, 4096, "fp32").check(INF2)
    AccessPattern(Space.SBUF, "bf16", 0, 1, 2 * 32767, ((-32767, 2), (1, 4))).check(INF2)


# ---- sizes and spans ----------------------------------------------------------------------
@given(on_chip_spaces.flatmap(lambda space: access_patterns(space, broadcast=True)))
def test_spans_bound_exactly_the_elements_touched(ap):
    rows = element_indices(ap)
    per_row = INF2.partition_bytes(ap.space) // ap.dtype.itemsize
    within = rows - (ap.partition_start + np.indices(ap.shape)[0]) * per_row
    assert ap.element_span() == (within.min(), within.max())
    size = ap.dtype.itemsize
    assert ap.byte_span() == (within.min() * size, (within.max() + 1) * size)
    assert ap.shape == (ap.partitions, *ap.free_shape)
    assert ap.free_size == int(np.prod(ap.free_shape)) and ap.elements == rows.size
    assert ap.nbytes == rows.size * size
    assert ap.partition_end == ap.partition_start + ap.partitions
    assert ap.innermost_stride_bytes == abs(ap.axes[-1][0]) * size


@given(st.data())
def test_hbm_byte_span_covers_all_rows(data):
    tensor = data.draw(dram_tensors("t"))
    ap = data.draw(hbm_patterns(tensor))
    index = element_indices(ap)
    size = ap.dtype.itemsize
    assert ap.byte_span() == (index.min() * size, (index.max() + 1) * size)


def test_dense_helpers_lay_tiles_out_contiguously():
    tile = sbuf((64, 32), (4, 16), "bf16", offset=1024)
    assert tile.axes == ((16, 4), (1, 16))
    assert tile.partition_start == 64 and tile.partitions == 32
    np.testing.assert_array_equal(element_indices(tile)[0].reshape(-1),
                                  64 * 96 * 1024 + 512 + np.arange(64))
    assert psum(8, 4).dtype.name == "fp32" and psum(8, 4).space is Space.PSUM
    rows = hbm("a", 4, 100, (2, 3), "fp32", offset=8)
    np.testing.assert_array_equal(element_indices(rows)[1].reshape(-1), 102 + np.arange(6))


# ---- text form ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "sbuf[0:128]+4096[[1,512]]:bf16",
    "psum[0:64]+2048[[1,256]]:fp32",
    "hbm:a[128x512]+1024[[1,512]]:bf16",
    "sbuf[32:48]+12[[-8,4],[2,3],[0,2],[1,1]]:fp8_e5m2",
])
def test_documented_operands_round_trip(text):
    assert str(AccessPattern.parse(text)) == text


@given(st.one_of(on_chip_spaces.flatmap(lambda space: access_patterns(space, broadcast=True)),
                 dram_tensors("weights").flatmap(hbm_patterns)))
def test_text_form_round_trips(ap):
    assert AccessPattern.parse(str(ap)) == ap
    assert str(AccessPattern.parse(str(ap))) == str(ap)


@pytest.mark.parametrize("text, message", [
    ("sbuf[0:128]+0[[1,512]]", r"malformed access pattern 'sbuf\[0:128\]\+0\[\[1,512\]\]'"),
    ("dram[0:4]+0[[1,4]]:fp32", r"malformed access pattern"),
    ("sbuf[0:4]+0[1,4]:fp32", r"malformed access pattern"),
    ("sbuf:x[0:4]+0[[1,4]]:fp32", r"on-chip operand 'sbuf:x\[0:4\].*' needs sbuf\[START:END\]"),
    ("psum[4x4]+0[[1,4]]:fp32", r"on-chip operand .* needs psum\[START:END\]"),
    ("hbm[0:4]+0[[1,4]]:fp32", r"HBM operand 'hbm\[0:4\].*' needs hbm:NAME\[ROWSxSTRIDE\]"),
    ("sbuf[0:4]+0[[1,4]]:fp64", r"unknown dtype 'fp64'"),
    ("sbuf[4:4]+0[[1,4]]:fp32", r"partition count 0 must be >= 1"),
])
def test_parse_errors_name_the_text(text, message):
    with pytest.raises(ValueError, match=message):
        AccessPattern.parse(text)


# ---- on-chip memory -----------------------------------------------------------------------
@settings(max_examples=15)
@given(on_chip_spaces.flatmap(lambda space: access_patterns(space, max_partitions=16)),
       seeds())
def test_on_chip_write_lands_where_the_definition_says(ap, seed):
    memory = OnChipMemory(ap.space, INF2)
    values = random_values(ap.dtype, ap.shape, seed)
    memory.write(ap, values)
    elements = memory.data.view(ap.dtype.storage)
    assert_same_bits(elements[element_indices(ap)], values)
    assert_same_bits(memory.read(ap), values)
    # exactly the written bytes are marked written
    size = ap.dtype.itemsize
    touched = element_indices(ap).reshape(-1, 1) * size + np.arange(size)
    np.testing.assert_array_equal(np.flatnonzero(memory.written), np.sort(touched.reshape(-1)))


@given(on_chip_spaces.flatmap(lambda space: dense_tiles(space)))
def test_dense_tiles_are_contiguous_rows_that_round_trip(tile):
    ap, values = tile
    ap.check(INF2)
    rows = element_indices(ap)
    for row in rows.reshape(ap.partitions, -1):
        np.testing.assert_array_equal(row, row[0] + np.arange(ap.free_size))
    memory = OnChipMemory(ap.space, INF2)
    memory.write(ap, values)
    assert_same_bits(memory.read(ap), values)


def test_on_chip_uninitialised_and_partially_written_reads_raise():
    memory = OnChipMemory(Space.SBUF, INF2)
    tile = sbuf((32, 4), 8, "fp32", offset=64)
    with pytest.raises(UninitializedReadError,
                       match=r"read of sbuf\[32:36\]\+64\[\[1,8\]\]:fp32: some of its bytes "
                             r"were never written"):
        memory.read(tile)
    np.testing.assert_array_equal(memory.read(tile, check_initialized=False), 0)
    memory.write(sbuf((32, 4), 32, "uint8", offset=64), np.ones((4, 32), np.uint8))
    assert memory.read(tile).shape == (4, 8)
    memory.write(sbuf((32, 4), 8, "uint8", offset=96), np.ones((4, 8), np.uint8))
    with pytest.raises(UninitializedReadError):
        memory.read(sbuf((32, 4), 4, "fp32", offset=96))  # only one byte of each element written


@pytest.mark.parametrize("ap, message", [
    (sbuf(4, 8, "fp32"), r"is not in psum"),
    (psum((96, 33), 4, "fp32"), r"reaches partitions 96\.\.128, bytes 0\.\.15; psum has 128 "
                                r"partitions of 16384 bytes"),
    (psum(4, 8, "fp32", offset=16 * 1024 - 16), r"bytes 16368\.\.16399; psum has 128"),
])
def test_on_chip_out_of_bounds_raises(ap, message):
    memory = OnChipMemory(Space.PSUM, INF2)
    with pytest.raises(MemoryAccessError, match=message):
        memory.write(ap, np.zeros(ap.shape, np.float32))
    with pytest.raises(MemoryAccessError, match=message):
        memory.read(ap)


# ---- device memory ------------------------------------------------------------------------
@given(st.data())
def test_device_memory_patterns_touch_the_defined_elements(data):
    tensor = data.draw(dram_tensors("t"))
    ap = data.draw(hbm_patterns(tensor))
    memory = DeviceMemory()
    memory.allocate(tensor)
    values = random_values(tensor.dtype, ap.shape, data.draw(seeds()))
    memory.write(ap, values)
    flat = memory.data["t"].view(tensor.dtype.storage)
    assert_same_bits(flat[element_indices(ap)], values)
    assert_same_bits(memory.read(ap), values)
    untouched = np.setdiff1d(np.arange(flat.size), element_indices(ap))
    if untouched.size:
        with pytest.raises(UninitializedReadError):
            memory.read(hbm("t", 1, 0, 1, tensor.dtype,
                            offset=int(untouched[0]) * tensor.dtype.itemsize))


def test_device_memory_store_load_and_errors():
    memory = DeviceMemory(capacity_bytes=1024)
    a = DramTensor("a", (4, 8), "fp32", "input")
    memory.allocate(a)
    memory.allocate(a)  # the same tensor again is a no-op
    assert memory.used_bytes == 128
    host = np.arange(32, dtype=np.float32).reshape(4, 8)
    memory.store("a", host)
    np.testing.assert_array_equal(memory.load("a"), host)
    np.testing.assert_array_equal(memory.read(hbm("a", 2, 16, (2, 2), "fp32", offset=4)),
                                  [[[1, 2], [3, 4]], [[17, 18], [19, 20]]])
    with pytest.raises(MemoryAccessError, match=r"tensor a is already allocated as"):
        memory.allocate(DramTensor("a", (4, 4), "fp32"))
    with pytest.raises(MemoryAccessError, match=r"allocating b \(1024 bytes\) exceeds device "
                                                r"memory: 128 of 1024 bytes already used"):
        memory.allocate(DramTensor("b", (256,), "fp32"))
    with pytest.raises(MemoryAccessError, match=r"no tensor 'c' in device memory"):
        memory.load("c")
    with pytest.raises(MemoryAccessError, match=r"reads a \(fp32\) as bf16"):
        memory.read(hbm("a", 1, 8, 8, "bf16"))
    with pytest.raises(MemoryAccessError, match=r"touches bytes 96\.\.159 of a \(128 bytes\)"):
        memory.read(hbm("a", 2, 8, 8, "fp32", offset=96))


def test_equal_operands_built_alike_are_one_shared_object():
    import copy
    import dataclasses
    import pickle

    a, b = sbuf(128, 512, "bf16", 1024), sbuf(128, 512, "bf16", 1024)
    assert a is b  # interned: identity makes equality and hashing cheap
    other = sbuf(128, 512, "fp32", 1024)
    assert other is not a and other != a
    moved = dataclasses.replace(a, offset=2048)
    assert moved.offset == 2048 and a.offset == 1024  # the shared object never changes
    for clone in (copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert clone == a and hash(clone) == hash(a)


@pytest.mark.parametrize("kind", ["operand", "instruction"])
def test_a_pickled_value_equals_its_original_in_a_process_with_another_hash_seed(tmp_path, kind):
    # Strings hash differently in each process; a hash cached before pickling must not travel.
    import os
    import pickle
    import subprocess
    import sys

    saved = tmp_path / "value.pkl"
    make = {"operand": "hbm('x', 128, 4096, 512, 'bf16', 1024)",
            "instruction": "DmaCopy(sbuf(128, 512, 'bf16'), hbm('x', 128, 4096, 512, 'bf16'))",
            }[kind]
    a = {"operand": hbm("x", 128, 4096, 512, "bf16", 1024),
         "instruction": DmaCopy(sbuf(128, 512, "bf16"), hbm("x", 128, 4096, 512, "bf16"))}[kind]
    hash(a)  # caches the hash in this process
    saved.write_bytes(pickle.dumps(a))
    check = ("import pickle, sys; from isa import DmaCopy, hbm, sbuf; "
             f"b = pickle.loads(open({str(saved)!r}, 'rb').read()); "
             f"a = {make}; "
             "sys.exit(0 if (a == b and hash(a) == hash(b) and b in {a}) else 1)")
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    done = subprocess.run([sys.executable, "-c", check], env={**os.environ, "PYTHONHASHSEED": seed},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
