"""The one device resolver: a params value (``auto``, ``cpu``, ``cuda``, ``cuda:1``) -> a torch device name."""

from __future__ import annotations

__all__ = ["resolve_device"]


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
