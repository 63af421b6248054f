"""The one rule for choosing a compute device outside ComfyUI (inside it, core's model management decides)."""

from __future__ import annotations

import torch


def pick_device(pref: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None: the first CUDA GPU when torch sees one, else the CPU; ``cpu``, ``cuda``, ``cuda:N``
    or a torch.device as given, with a clear error when CUDA is asked for and absent."""
    if pref is None or (isinstance(pref, str) and pref == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(pref)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {pref!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {pref!r} was asked for but torch sees no CUDA GPU; use 'cpu' or 'auto'")
    return device
