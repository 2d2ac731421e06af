"""Process pools for the stages that spread work over cores.

Every pool worker runs one BLAS thread (a forked pool otherwise oversubscribes
the cores about tenfold, and the thread count must not change results) and
keeps freed memory for its next task instead of returning it to the kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from threadpoolctl import threadpool_limits

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def resolve_n_jobs(n_jobs: int) -> int:
    """``0`` means all cores this process may use."""
    if n_jobs > 0:
        return n_jobs
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def keep_freed_memory(limit_bytes: int = 256 * 2**20) -> None:
    """Let glibc reuse freed buffers instead of unmapping them.

    A clip's temporaries (signal, frames, spectrum) are a few MB. Above 128 KB
    glibc serves each with a fresh mmap and unmaps it on free, so every clip
    page-faults its buffers in again: measured in extract, 40% of the workers'
    time went to the kernel. Raising both thresholds keeps them in the heap.
    No-op where glibc is not the allocator.
    """
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, limit_bytes)
        mallopt(M_TRIM_THRESHOLD, limit_bytes)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # pragma: no cover - not glibc
        return None


_LIBC = _libc()


def return_freed_memory() -> None:
    """Hand the free pages of the heap back to the kernel (glibc ``malloc_trim``).

    Call it when a task's large arrays are gone: :func:`keep_freed_memory` keeps freed
    buffers up to 256 MB in the heap, where a unit's arrays (a few hundred MB at the
    development set's size) otherwise stay resident after it, in every worker. No-op where
    glibc is not the allocator.
    """
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def init_worker() -> None:
    threadpool_limits(1)
    # torch sizes its own thread pool when first imported (masks imports it lazily, in the
    # worker): without this, two workers each ran two torch threads and spun (2x the CPU).
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    keep_freed_memory()


def process_pool(n_jobs: int) -> ProcessPoolExecutor:
    """A pool of ``n_jobs`` workers set up by :func:`init_worker`."""
    return ProcessPoolExecutor(n_jobs, initializer=init_worker)


def parallel_map(stack: contextlib.ExitStack, n_jobs: int) -> Callable:
    """``map`` over a pool of ``n_jobs`` workers, or in this process when ``n_jobs`` is 1.

    The serial path is set up like a worker (one BLAS thread, freed memory kept),
    so results do not depend on how many processes ran: two BLAS threads round
    float32 matmuls (the mel filter bank, the permutation test) differently from
    one. The pool, or the thread limit, lasts as long as ``stack``.
    """
    if n_jobs > 1:
        return stack.enter_context(process_pool(n_jobs)).map
    stack.enter_context(threadpool_limits(1))
    keep_freed_memory()
    return map
