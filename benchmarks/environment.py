"""The machine a benchmark ran on, and the devices it measures."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
from pathlib import Path

__all__ = ["cpu_model", "machine_info", "speed_devices", "file_digest", "now_iso"]


def now_iso() -> str:
    """Current UTC time, ISO 8601 to the second (``2025-01-31T12:00:00Z``)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere; ``unknown`` if neither)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def speed_devices() -> list[str]:
    """Devices the speed figures are measured on: always ``cpu``, plus ``cuda`` when torch sees a GPU."""
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def machine_info(threads: int) -> dict:
    """What the figures depend on.

    Args:
        threads: torch CPU threads the CPU figures use.
    Returns:
        ``{"cpu", "cpu_count", "threads", "python", "torch", "dlib", "platform", "gpu"}``; ``gpu`` is the
        CUDA device name or None (then the GPU figures are absent, and the report says so).
    """
    import torch

    try:
        import dlib

        dlib_version = dlib.__version__
    except ImportError:  # the bench extra is not installed
        dlib_version = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": int(threads),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dlib": dlib_version,
        "platform": platform.platform(),
        "gpu": gpu,
    }


def file_digest(path: str | os.PathLike, length: int = 12) -> str:
    """First ``length`` hex digits of a file's sha256 (identifies the model a figure was measured on)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]
