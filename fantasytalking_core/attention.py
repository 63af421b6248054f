"""One attention entry point for the DiT and every adapter.

All attention in the project goes through :func:`attention`, so a faster kernel is one new branch
here and nowhere else. Layout follows Wan: ``[B, L, heads, head_dim]``.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "sdpa", "flash", "sage")


def available_backends() -> list[str]:
    """Backends that can run here (flash and sage need their packages and a CUDA device)."""
    found = ["sdpa"]
    if torch.cuda.is_available():
        if importlib.util.find_spec("flash_attn_interface") or importlib.util.find_spec("flash_attn"):
            found.append("flash")
        if importlib.util.find_spec("sageattention"):
            found.append("sage")
    return found


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is unknown; choose one of {BACKENDS}")


def key_padding_mask(k_lens: torch.Tensor, num_keys: int) -> torch.Tensor:
    """``[B] lengths -> [B, 1, 1, Lk]`` boolean mask, True where a key may be attended."""
    positions = torch.arange(num_keys, device=k_lens.device)
    return (positions[None, :] < k_lens[:, None])[:, None, None, :]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_lens: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Multi-head attention: ``q [B, Lq, N, D]``, ``k, v [B, Lk, N, D]`` -> ``[B, Lq, N, D]``.

    ``k_lens [B]`` marks how many leading keys of each row are real; the rest are padding and get
    no weight. A row with ``k_lens == 0`` attends to nothing and returns zeros (this is what an
    empty audio window means). q and k are cast to v's dtype, as Wan's kernels do.
    """
    _check_backend(backend)
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"attention expects [B, L, heads, head_dim] tensors, got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    out_dtype = q.dtype
    q, k = q.to(v.dtype), k.to(v.dtype)
    if backend in ("flash", "sage") or (backend == "auto" and q.is_cuda and k_lens is None):
        fast = _fast_kernel(q, k, v, k_lens, backend)
        if fast is not None:
            return fast.to(out_dtype)

    mask = None
    if k_lens is not None:
        k_lens = k_lens.to(device=q.device, dtype=torch.long)
        if k_lens.shape != (q.shape[0],):
            raise ValueError(f"k_lens must have shape [{q.shape[0]}], got {tuple(k_lens.shape)}")
        # Rows with no keys at all would give NaN in softmax; let them see everything, zero later.
        safe = torch.where(k_lens > 0, k_lens, torch.full_like(k_lens, k.shape[1]))
        mask = key_padding_mask(safe, k.shape[1])
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    ).transpose(1, 2)
    if k_lens is not None and bool((k_lens == 0).any()):
        out = out * (k_lens > 0).to(out.dtype)[:, None, None, None]
    return out.to(out_dtype)


def _fast_kernel(q, k, v, k_lens, backend):
    """FlashAttention 3/2 or SageAttention when installed; None means 'use SDPA'."""
    if not q.is_cuda or k_lens is not None or q.dtype not in (torch.float16, torch.bfloat16):
        if backend in ("flash", "sage"):
            raise RuntimeError(
                f"attention backend {backend!r} needs CUDA half-precision tensors without key "
                f"padding; got device {q.device}, dtype {q.dtype}. Use backend='auto' or 'sdpa'."
            )
        return None
    if backend in ("auto", "flash"):
        if importlib.util.find_spec("flash_attn_interface"):
            import flash_attn_interface

            out = flash_attn_interface.flash_attn_func(q, k, v)
            return out[0] if isinstance(out, tuple) else out
        if importlib.util.find_spec("flash_attn"):
            import flash_attn

            return flash_attn.flash_attn_func(q, k, v)
    if backend in ("auto", "sage") and importlib.util.find_spec("sageattention"):
        from sageattention import sageattn

        return sageattn(q, k, v, tensor_layout="NHD")
    if backend in ("flash", "sage"):
        raise RuntimeError(
            f"attention backend {backend!r} was asked for but its package is not installed; "
            f"available here: {available_backends()}"
        )
    return None
