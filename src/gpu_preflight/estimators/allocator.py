"""A model of PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp), default
settings (no expandable segments, no max_split_size), so an estimate can say what
torch.cuda.memory_reserved() - and so nvidia-smi - will show, not only what is allocated.

Rules modelled:
- every request is rounded up to a multiple of 512 bytes;
- requests <= 1 MiB come from a small pool of 2 MiB segments; larger ones from the large pool,
  whose new segments are 20 MiB for requests < 10 MiB and the request rounded up to 2 MiB otherwise;
- a request takes the smallest cached free block that fits (best fit, then lowest address);
  the rest is split off as a new free block when it is >= 512 B (small pool) or > 1 MiB (large);
- freed blocks return to their pool and merge with free neighbours of the same segment;
- cudaMalloc is called (reserved grows) only when no cached block fits.
Source: https://github.com/pytorch/pytorch/blob/main/c10/cuda/CUDACachingAllocator.cpp
"""

from __future__ import annotations

import bisect

MIB = 1 << 20
SMALL = 1 * MIB
SMALL_BUFFER = 2 * MIB
LARGE_BUFFER = 20 * MIB
MIN_LARGE_ALLOC = 10 * MIB
ROUND_LARGE = 2 * MIB


def round_size(size: int) -> int:
    return 512 if size < 512 else 512 * -(-size // 512)


def segment_size(size: int) -> int:
    if size <= SMALL:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * -(-size // ROUND_LARGE)


class Allocator:
    """Tracks blocks as (segment, offset, size). Handles are ints returned by malloc()."""

    def __init__(self) -> None:
        self.free_lists: dict[bool, list[tuple[int, int, int]]] = {True: [], False: []}  # (size, seg, off)
        self.segments: list[int] = []  # segment sizes
        self.blocks: dict[int, tuple[int, int, int, bool]] = {}  # handle -> (seg, off, size, small)
        self.free_by_pos: dict[tuple[int, int], int] = {}  # (seg, off) -> size of a free block
        self.free_by_end: dict[tuple[int, int], int] = {}  # (seg, end offset) -> start offset
        self.used_by_pos: set[tuple[int, int]] = set()
        self.seg_pool: list[bool] = []
        self.next_handle = 1
        self.allocated = 0
        self.reserved = 0
        self.peak_allocated = 0
        self.peak_reserved = 0

    def _take_free(self, small: bool, size: int) -> tuple[int, int, int] | None:
        lst = self.free_lists[small]
        i = bisect.bisect_left(lst, (size, -1, -1))
        if i == len(lst):
            return None
        blk = lst.pop(i)
        del self.free_by_pos[(blk[1], blk[2])]
        del self.free_by_end[(blk[1], blk[2] + blk[0])]
        return blk

    def _add_free(self, small: bool, seg: int, off: int, size: int) -> None:
        bisect.insort(self.free_lists[small], (size, seg, off))
        self.free_by_pos[(seg, off)] = size
        self.free_by_end[(seg, off + size)] = off

    def _remove_free(self, small: bool, seg: int, off: int) -> int:
        size = self.free_by_pos.pop((seg, off))
        del self.free_by_end[(seg, off + size)]
        lst = self.free_lists[small]
        i = bisect.bisect_left(lst, (size, seg, off))
        lst.pop(i)
        return size

    def malloc(self, nbytes: int) -> int:
        size = round_size(nbytes)
        small = size <= SMALL
        blk = self._take_free(small, size)
        if blk is None:
            seg_bytes = segment_size(size)
            seg = len(self.segments)
            self.segments.append(seg_bytes)
            self.seg_pool.append(small)
            self.reserved += seg_bytes
            self.peak_reserved = max(self.peak_reserved, self.reserved)
            blk = (seg_bytes, seg, 0)
        bsize, seg, off = blk
        rest = bsize - size
        if (small and rest >= 512) or (not small and rest > SMALL):
            self._add_free(small, seg, off + size, rest)
        else:
            size = bsize
        handle = self.next_handle
        self.next_handle += 1
        self.blocks[handle] = (seg, off, size, small)
        self.allocated += size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return handle

    def free(self, handle: int) -> None:
        seg, off, size, small = self.blocks.pop(handle)
        self.allocated -= size
        # merge with the next free block, then with the previous one
        nxt = (seg, off + size)
        if nxt in self.free_by_pos:
            size += self._remove_free(small, *nxt)
        prev = self._prev_free(seg, off)
        if prev is not None:
            poff, psize = prev
            self._remove_free(small, seg, poff)
            off, size = poff, psize + size
        self._add_free(small, seg, off, size)

    def _prev_free(self, seg: int, off: int) -> tuple[int, int] | None:
        start = self.free_by_end.get((seg, off))
        return None if start is None else (start, self.free_by_pos[(seg, start)])
