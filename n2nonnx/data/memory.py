"""Checking an allocation against the memory this machine has, before making it.

A data file whose header claims 10**12 rows, or a generator option asking for a 40 GiB
matrix, should be refused with the number, not by a MemoryError (or the OOM killer)
after minutes of work.
"""

from __future__ import annotations

import os
from pathlib import Path

from n2nonnx.errors import DataError


def available_memory() -> int | None:
    """Bytes of memory available to new allocations, or None when it cannot be told.

    ``MemAvailable`` of ``/proc/meminfo`` on Linux (free memory plus what the kernel can
    reclaim), else the free pages reported by ``os.sysconf``.
    """
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_memory(nbytes: int, what: str, fix: str) -> None:
    """Refuse an allocation of ``nbytes`` that the available memory cannot hold.

    Args:
        nbytes: the size about to be allocated.
        what: what would be allocated (for the message).
        fix: what the user can do instead.

    Raises:
        DataError: ``nbytes`` exceeds the available memory.
    """
    available = available_memory()
    if available is not None and nbytes > available:
        raise DataError(
            f"{what} needs {format_bytes(nbytes)} of memory but only {format_bytes(available)} is "
            f"available; {fix}"
        )


def format_bytes(nbytes: float) -> str:
    """``1.5 GiB``-style text."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(nbytes) < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"
