"""Motion-intensity network: (omega_l, omega_b) -> an embedding added to the timestep embedding.

The paper's design: MLP layers, a ResNet layer and average pooling. Each intensity in [0, 1] is
embedded sinusoidally (like a timestep), mapped by an MLP to a token, the two tokens pass a
residual layer and are average-pooled; a zero-initialised projection to the DiT width makes an
untrained network change nothing. No public weights exist; the training module trains it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..wan.model import sinusoidal_embedding_1d


@dataclass(frozen=True)
class MotionAdapterConfig:
    freq_dim: int = 256
    hidden: int = 512
    dim: int = 5120  # DiT width = width of the timestep embedding

    @classmethod
    def for_wan(cls, wan_cfg, **changes) -> "MotionAdapterConfig":
        return cls(dim=wan_cfg.dim, **changes)


class ResidualLayer(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(nn.functional.silu(self.norm1(x)))
        return x + self.fc2(nn.functional.silu(self.norm2(h)))


class MotionAdapter(nn.Module):
    def __init__(self, cfg: MotionAdapterConfig = MotionAdapterConfig()):
        super().__init__()
        self.cfg = cfg
        # One embedding per intensity kind (face, body), so the two are told apart before pooling.
        self.kind_embedding = nn.Parameter(torch.zeros(2, cfg.hidden))
        self.mlp = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden))
        self.resnet = ResidualLayer(cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @staticmethod
    def condition(omega_l: float | torch.Tensor, omega_b: float | torch.Tensor) -> torch.Tensor:
        """Validate the two intensities -> ``[B, 2]`` (B = 1 for plain floats)."""
        values = []
        for name, w in (("omega_l (facial motion)", omega_l), ("omega_b (body motion)", omega_b)):
            w = torch.as_tensor(w, dtype=torch.float32).reshape(-1)
            if not torch.isfinite(w).all() or (w < 0).any() or (w > 1).any():
                raise ValueError(f"{name} must be in [0, 1] (0.5 is neutral), got {w.tolist()}")
            values.append(w)
        if values[0].shape != values[1].shape:
            raise ValueError(f"omega_l and omega_b need the same batch, got {values[0].shape[0]} and {values[1].shape[0]}")
        return torch.stack(values, dim=1)

    def embed(self, omegas: torch.Tensor) -> torch.Tensor:
        """``[B, 2]`` intensities in [0, 1] -> ``[B, dim]`` added to the timestep embedding."""
        b = omegas.shape[0]
        w = self.mlp[0].weight
        freqs = sinusoidal_embedding_1d(self.cfg.freq_dim, omegas.reshape(-1).to(w.device) * 1000)
        tokens = self.mlp(freqs.to(w.dtype)).view(b, 2, -1) + self.kind_embedding
        return self.out(self.resnet(tokens).mean(dim=1)).float()
