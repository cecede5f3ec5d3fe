"""promptbake.core.cpu_memory: glibc keeps freed blocks below the raised mmap threshold in the heap, and the block
form hands the heap's free pages back when it ends."""

from __future__ import annotations

import ctypes
import sys

import pytest

import promptbake.core.cpu_memory as cpu_memory
from promptbake.core.cpu_memory import MMAP_THRESHOLD, freed_memory_kept_in_heap, keep_freed_memory_in_heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_thresholds_are_raised_once():
    assert keep_freed_memory_in_heap() is True
    assert keep_freed_memory_in_heap() is True  # idempotent

    # A 16 MiB block now comes from the heap (reused after free); with glibc's default 128 KiB threshold it
    # would be a fresh mmap, unmapped again on free.
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = MMAP_THRESHOLD // 2
    first = libc.malloc(size)
    # an mmapped chunk carries the IS_MMAPPED bit (0x2) in its size field, just before the user pointer
    header = ctypes.c_size_t.from_address(first - ctypes.sizeof(ctypes.c_size_t)).value
    libc.free(first)
    assert header & 0x2 == 0, "a block under the threshold was still served by mmap"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_block_trims_the_heap_when_it_ends(monkeypatch):
    trims = []
    monkeypatch.setattr(cpu_memory, "return_free_heap_memory", lambda: trims.append(1) or True)
    with pytest.raises(KeyboardInterrupt), freed_memory_kept_in_heap() as kept:
        assert kept is True and trims == []
        raise KeyboardInterrupt  # a run stopped mid-training
    assert trims == [1]
