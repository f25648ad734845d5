"""Where a process computes: the one device resolver (``auto``, ``cpu``, ``cuda``, ``cuda:1`` -> a torch device
name) and the one CPU thread setting (torch, OpenMP and OpenCV threads of a stage, a worker or a benchmark)."""

from __future__ import annotations

import os

__all__ = ["THREADS_ENV", "resolve_device", "set_threads"]

#: Environment variable that overrides every ``num_threads`` param (e.g. a CI machine with more cores).
THREADS_ENV = "FACELANDMARKS_NUM_THREADS"


def resolve_device(name: str) -> str:
    """Resolve a device setting.

    Args:
        name: ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:<index>``.
    Returns:
        the device name for ``torch.device(...)``: ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
    Raises:
        ValueError: CUDA asked for but not available, or an unknown device name.
    """
    import torch

    name = str(name).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but torch sees no CUDA GPU; use 'auto' or 'cpu'")
        return name
    raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:<index>")


def set_threads(num_threads: int, opencv: bool = False) -> int:
    """Set this process's CPU threads for torch (intra-op / OpenMP), and optionally OpenCV.

    Args:
        num_threads: threads; ``FACELANDMARKS_NUM_THREADS`` wins when set; 0: all cores, shared out among
            the ``LOCAL_WORLD_SIZE`` processes that torchrun started on this machine.
        opencv: also ``cv2.setNumThreads`` and a single inter-op thread (serving workers, set before the
            model loads; inter-op threads can only be set before torch's first parallel call).
    Returns:
        The number of threads set.
    """
    import torch

    env = os.environ.get(THREADS_ENV)
    n = int(env) if env else int(num_threads)
    n = n if n > 0 else max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(n)
    if opencv:
        import cv2

        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # torch already ran parallel work in this process
            pass
        cv2.setNumThreads(n)
    return n
