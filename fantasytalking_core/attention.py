"""One attention entry point for the DiT and every adapter.

All attention in the project goes through :func:`attention`, so a faster kernel is one new branch
here and nowhere else. Layout follows Wan: ``[B, L, heads, head_dim]``.

Backends (``backend=``):

- ``"auto"`` (default): on CUDA with fp16/bf16 and no key padding, FlashAttention 3 when its
  package (``flash_attn_interface``) is installed and the GPU is a Hopper (sm90); otherwise PyTorch
  SDPA with its own kernel choice (FlashAttention 2 inside PyTorch on recent GPUs). Exact kernels
  only: SageAttention quantises Q and K to 8 bits, so it is never picked automatically. cuDNN
  attention is often faster on Hopper but has had wrong-result bugs in some PyTorch releases, so
  it is opt-in (``"cudnn"``) until ``benchmarks/dit_step.py`` has measured it on the target setup.
- ``"sdpa"``: ``F.scaled_dot_product_attention`` with PyTorch's own kernel choice (CPU and CUDA).
- ``"math"``: SDPA's reference math kernel (slow; for checks and FLOP counting).
- ``"cudnn"``: SDPA restricted to cuDNN attention (CUDA).
- ``"flash"``: FlashAttention 3 if installed, else FlashAttention 2 (``flash_attn``) (CUDA).
- ``"flash3"`` / ``"flash2"``: exactly that package (CUDA).
- ``"sage"``: SageAttention (``sageattention``; CUDA; 8-bit Q/K, not bit-exact).

Rows with key padding (``k_lens``, the audio windows) always go through SDPA with a mask; they are
a tiny share of the cost.

The ``meta`` device stands for a GPU here (``scripts/dry_run.py``: every path at full size without
one), so the CUDA kernels' paths run up to the kernel call there.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "sdpa", "math", "cudnn", "flash", "flash3", "flash2", "sage")
CUDA_BACKENDS = ("cudnn", "flash", "flash3", "flash2", "sage")  # need a CUDA device (and half precision)
_PACKAGES = {"flash3": ("flash_attn_interface",), "flash2": ("flash_attn",),
             "flash": ("flash_attn_interface", "flash_attn"), "sage": ("sageattention",)}


@functools.lru_cache(maxsize=None)
def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def on_gpu(t: torch.Tensor) -> bool:
    """A CUDA tensor, or a meta one (the simulated GPU of the dry run)."""
    return t.is_cuda or t.is_meta


def available_backends() -> list[str]:
    """Backends that can run here (the CUDA ones need a GPU, flash/sage also their packages)."""
    found = ["sdpa", "math"]
    if torch.cuda.is_available():
        found.append("cudnn")
        for name, packages in _PACKAGES.items():
            if any(_installed(p) for p in packages):
                found.append(name)
    return found


def resolve_backend(backend: str, device: torch.device | str | None = None) -> str:
    """The concrete kernel ``"auto"`` would use for half-precision unpadded attention on ``device``."""
    _check_backend(backend)
    if backend != "auto":
        return backend
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return "sdpa"
    major = _major_capability(device.index if device.index is not None else torch.cuda.current_device())
    if major == 9 and _installed("flash_attn_interface"):
        return "flash3"
    return "sdpa"


@functools.lru_cache(maxsize=None)
def _major_capability(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]


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

    ``k_lens [B]`` marks how many leading keys of each row are real (at least one: the audio
    windows are built that way and ``AudioCondition`` checks it once, where it is made); the rest
    are padding and get no weight. Nothing here reads a tensor's value: no device sync inside a
    step, no graph break under torch.compile. q and k are cast to v's dtype, as Wan's kernels do.
    """
    _check_backend(backend)
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"attention expects [B, L, heads, head_dim] tensors, got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    out_dtype = q.dtype
    q, k = q.to(v.dtype), k.to(v.dtype)
    if backend in CUDA_BACKENDS:
        _require_cuda(q, k_lens, backend)
    if k_lens is None and on_gpu(q) and q.dtype in (torch.float16, torch.bfloat16) and backend != "math":
        kernel = resolve_backend(backend, q.device)
        if kernel in ("flash", "flash3", "flash2", "sage"):
            return _package_kernel(q, k, v, kernel).to(out_dtype)
        if kernel == "cudnn":
            return _sdpa(q, k, v, None, _cudnn_only()).to(out_dtype)

    mask = None
    if k_lens is not None:
        k_lens = k_lens.to(device=q.device, dtype=torch.long)
        if k_lens.shape != (q.shape[0],):
            raise ValueError(f"k_lens must have shape [{q.shape[0]}], got {tuple(k_lens.shape)}")
        mask = key_padding_mask(k_lens, k.shape[1])
    return _sdpa(q, k, v, mask, _math_only() if backend == "math" else None).to(out_dtype)


def _sdpa(q, k, v, mask, kernels) -> torch.Tensor:
    """SDPA in Wan's layout; ``kernels`` is an optional ``sdpa_kernel`` context."""
    args = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    if kernels is None:
        return F.scaled_dot_product_attention(*args, attn_mask=mask).transpose(1, 2)
    with kernels:
        return F.scaled_dot_product_attention(*args, attn_mask=mask).transpose(1, 2)


def _math_only():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def _cudnn_only():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.CUDNN_ATTENTION)


def _require_cuda(q: torch.Tensor, k_lens, backend: str) -> None:
    if not on_gpu(q) or q.dtype not in (torch.float16, torch.bfloat16):
        raise RuntimeError(
            f"attention backend {backend!r} needs CUDA half-precision tensors; got device {q.device}, "
            f"dtype {q.dtype}. Use backend='auto' or 'sdpa'."
        )
    if k_lens is not None:
        return  # padded rows use SDPA with a mask whatever the backend
    packages = _PACKAGES.get(backend, ())
    if packages and not any(_installed(p) for p in packages):
        raise RuntimeError(
            f"attention backend {backend!r} was asked for but its package ({' or '.join(packages)}) is not "
            f"installed; available here: {available_backends()}"
        )


def _package_kernel(q, k, v, backend: str) -> torch.Tensor:
    """FlashAttention 3/2 or SageAttention, all in the ``[B, L, N, D]`` layout."""
    if backend in ("flash", "flash3") and _installed("flash_attn_interface"):
        import flash_attn_interface

        out = flash_attn_interface.flash_attn_func(q, k, v)
        return out[0] if isinstance(out, tuple) else out
    if backend in ("flash", "flash2"):
        import flash_attn

        return flash_attn.flash_attn_func(q, k, v)
    from sageattention import sageattn

    return sageattn(q, k, v, tensor_layout="NHD")
