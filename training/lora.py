"""LoRA on the DiT's linear layers, added in place so that the base checkpoint keys stay unchanged.

Each targeted `nn.Linear` keeps its own `weight`/`bias` and gains `lora_A` [r, in] and `lora_B`
[out, r] (its class is swapped to `LoRALinear`, a subclass), so the state dict reads
`blocks.0.self_attn.q.weight` as before plus `blocks.0.self_attn.q.lora_A.weight`. The update is
`W x + b + (alpha / r) * B A x`; B starts at zero, so a fresh LoRA changes nothing.

`lora_state` exports the pairs in the layout ComfyUI's LoRA loaders read:
`diffusion_model.<module>.lora_A.weight`, `.lora_B.weight` and `.alpha`.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoRALinear(nn.Linear):
    lora_A: nn.Linear
    lora_B: nn.Linear
    lora_scale: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        delta = self.lora_B(self.lora_A(x.to(self.lora_A.weight.dtype)))
        return out + (delta * self.lora_scale).to(out.dtype)


def _matches(name: str, targets: tuple[str, ...]) -> bool:
    return any(re.fullmatch(rf"blocks\.\d+\.{re.escape(t)}", name) for t in targets)


def add_lora(dit: nn.Module, targets: tuple[str, ...], rank: int, alpha: float, seed: int = 0) -> list[str]:
    """Give every `blocks.N.<target>` Linear of `dit` a LoRA pair; returns their module names.

    lora_A is initialised like nn.Linear (Kaiming uniform, a=sqrt(5)) from a generator seeded by
    `seed`, lora_B with zeros. Works on the meta device too (then `init_lora_` fills them later).
    """
    names = []
    for name, module in dit.named_modules():
        if type(module) is nn.Linear and _matches(name, targets):
            names.append(name)
    if not names:
        raise ValueError(f"no Linear layer of the DiT matches model.lora_targets {list(targets)}; use names like "
                         f"'self_attn.q' or 'ffn.0' (relative to blocks.N)")
    for name in names:
        module = dit.get_submodule(name)
        device = module.weight.device
        module.__class__ = LoRALinear
        module.lora_A = nn.Linear(module.in_features, rank, bias=False, device=device)
        module.lora_B = nn.Linear(rank, module.out_features, bias=False, device=device)
        module.lora_scale = alpha / rank
    if not any(dit.get_submodule(n).weight.is_meta for n in names):
        init_lora_(dit, seed)
    return names


def lora_init_tensors(module: LoRALinear, name: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The initial (A, B) of one LoRA pair, full-size float32 on the CPU, the same on every rank."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + sum(name.encode()) * 7919 + len(name))
    fan_in = module.lora_A.in_features
    bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) of nn.Linear
    a = (torch.rand(module.lora_A.weight.shape, generator=g) * 2 - 1) * bound
    return a, torch.zeros(module.lora_B.weight.shape)


def init_lora_(dit: nn.Module, seed: int, fill=None) -> None:
    """(Re)initialise every LoRA pair; `fill(param, full_tensor)` writes into sharded parameters."""
    fill = fill or (lambda p, t: p.data.copy_(t.to(p.dtype)))
    with torch.no_grad():
        for name, module in dit.named_modules():
            if isinstance(module, LoRALinear):
                a, b = lora_init_tensors(module, name, seed)
                fill(module.lora_A.weight, a)
                fill(module.lora_B.weight, b)


def lora_state(state: dict[str, torch.Tensor], alpha: float, prefix: str = "dit.") -> dict[str, torch.Tensor]:
    """Trainable-state keys `dit.<module>.lora_{A,B}.weight` -> ComfyUI LoRA keys; `.alpha` holds
    `alpha`, so a loader's `alpha / rank` is the scale the model trained with."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(re.escape(prefix) + r"(.+)\.lora_([AB])\.weight", key)
        if m is None:
            continue
        module, which = m.groups()
        out[f"diffusion_model.{module}.lora_{which}.weight"] = value.detach().float().cpu().contiguous()
        if which == "A":
            out[f"diffusion_model.{module}.alpha"] = torch.tensor(float(alpha))
    return out
