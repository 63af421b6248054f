"""fp8 weights: float8 e4m3fn storage with one scale per tensor, and fp8 matmuls where the GPU has them.

A weight ``W`` is stored as ``W8 = fp8(W / s)`` with ``s = max|W| / 448`` (448 is e4m3fn's
largest value), so ``W ~= W8 * s``; the scale is the buffer ``scale_weight``, the name ComfyUI's
"fp8 scaled" Wan files use. The layer keeps its class's module path and parameter names
(``blocks.7.ffn.0.weight``), so state-dict keys only gain ``.scale_weight``.

Two ways to multiply:
- dequantise: ``F.linear(x, W8.to(dtype) * s, b)``, any device, the compute dtype of before;
- fp8 matmul (``"e4m3fn_fast"``): the activations are quantised per tensor too
  (``x8 = fp8(x / s_x)``, ``s_x = max|x| / 448``) and ``torch._scaled_mm(x8, W8^T, s_x, s)`` runs
  on the tensor cores in fp8 with bf16 output. Used only on CUDA with compute capability >= 8.9
  and dimensions that are multiples of 16; elsewhere the dequantising path runs.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``W -> (W8, s)`` with ``W8`` float8 e4m3fn and ``s`` a float32 scalar, ``W ~= W8 * s``."""
    w = weight.detach().float()
    scale = (w.abs().amax() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def fp8_matmul_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True where ``torch._scaled_mm`` runs in fp8 on tensor cores: CUDA sm >= 8.9, dims % 16 == 0."""
    if not (x.is_cuda and weight.is_cuda or x.is_meta and weight.is_meta) or not hasattr(torch, "_scaled_mm"):
        return False  # (meta: the dry run's simulated GPU, taken to be a Hopper)
    if x.is_cuda and torch.cuda.get_device_capability(x.device) < (8, 9):
        return False
    out_features, in_features = weight.shape
    return in_features % 16 == 0 and out_features % 16 == 0


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
               out_dtype: torch.dtype) -> torch.Tensor:
    """``x @ (W8 * s)^T + b`` with x quantised per tensor to e4m3fn and one ``torch._scaled_mm``.

    Runs wherever ``_scaled_mm`` does (the CPU too, for tests); :class:`FP8Linear` calls it only
    where :func:`fp8_matmul_supported` says it is fast.
    """
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).float()
    x_scale = (x2.abs().amax() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    x8 = (x2 / x_scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    out = torch._scaled_mm(x8, weight.t(), scale_a=x_scale, scale_b=scale.float().to(x.device),
                           out_dtype=out_dtype)
    if bias is not None:
        out = out + bias.to(out_dtype)
    return out.reshape(*shape[:-1], weight.shape[0])


class FP8Linear(nn.Linear):
    """An ``nn.Linear`` whose weight is stored in e4m3fn with a per-tensor ``scale_weight``.

    Made from an existing Linear by :func:`convert_linear` (class swap, same parameters object);
    ``compute_dtype`` is the dtype the model computes in (what the weight was before), read by
    the blocks through ``_dtype_of``.
    """

    compute_dtype: torch.dtype
    fast: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.compute_dtype
        if self.fast and dtype in (torch.bfloat16, torch.float16) and fp8_matmul_supported(x, self.weight):
            return fp8_linear(x.to(dtype), self.weight, self.scale_weight, self.bias, dtype)
        w = self.weight.to(dtype) * self.scale_weight.to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        return F.linear(x.to(dtype), w, bias)


def convert_linear(linear: nn.Linear, fast: bool = False) -> FP8Linear:
    """Quantise ``linear`` in place (its class becomes :class:`FP8Linear`) and return it."""
    if getattr(linear, "_ft_hook", None) is not None:
        raise RuntimeError("fp8 must be configured before the FantasyTalking adapters are attached: call "
                           "perf.configure(model, RuntimeOptions(fp8=...)) first, then attach_adapters")
    if isinstance(linear, FP8Linear):
        linear.fast = fast
        return linear
    if type(linear) is not nn.Linear:
        raise TypeError(f"fp8 converts plain nn.Linear layers, got {type(linear).__name__}")
    compute = linear.weight.dtype
    if compute not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"cannot quantise a {compute} weight to fp8; load the model in bf16, fp16 or fp32 first")
    w8, scale = quantize(linear.weight)
    linear.weight.requires_grad_(False)
    linear.weight.data = w8  # same Parameter object: shared with attach's shadow modules and optimisers
    linear.register_buffer("scale_weight", scale.to(w8.device))
    linear.__class__ = FP8Linear
    linear.compute_dtype = compute
    linear.fast = fast
    return linear


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The linear layers inside the DiT's blocks (attention q/k/v/o, k_img/v_img, FFN), by path.

    Embeddings, the head and the adapters stay in their dtype: they are small and sensitive.
    """
    return {f"blocks.{name}": m for name, m in model.blocks.named_modules()
            if isinstance(m, nn.Linear) and name}


def to_fp8(model: nn.Module, fast: bool = False) -> int:
    """Quantise every block linear of ``model`` in place; returns how many were converted."""
    layers = block_linears(model)
    for layer in layers.values():
        convert_linear(layer, fast=fast)
    return len(layers)
