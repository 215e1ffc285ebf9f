"""glibc takes the operator's arena limit and gives freed heap back."""

import ctypes

from otp_operator import heap


def test_freed_heap_goes_back_to_the_system():
    assert heap.limit_arenas(), "glibc refused mallopt(M_ARENA_MAX)"

    def resident_kb() -> int:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(4096) for _ in range(20000)]  # 80 MB in small blocks: the heap, not mmap
    top = libc.malloc(4096)  # still in use above them: free() alone cannot shrink the heap
    for block in blocks:
        ctypes.memset(block, 1, 4096)
    filled = resident_kb()
    for block in blocks:
        libc.free(block)
    assert heap.trim()
    assert resident_kb() < filled - 40_000
    libc.free(top)
