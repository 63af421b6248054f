"""Flow-matching training targets, the per-sample random draws, and the (lip-masked) loss.

Flow matching as Wan2.1 trains it, matching `fantasytalking_core.sampling`:
    x_t = (1 - sigma) * x0 + sigma * noise,   target = noise - x0,   timestep = 1000 * sigma.
sigma is drawn per sample as u ~ U(0, 1) pushed through the sampling schedule's shift,
`sigma = shift * u / (1 + (shift - 1) * u)` (shift 5 as at inference), so training sees noise
levels with the density the sampler visits them; the loss is not re-weighted over sigma. (The
official trainer, DiffSynth, draws one of 1000 shifted discrete timesteps and weights the loss
with a bell curve; continuous u without weighting is the simpler choice documented here.)

Every random quantity of one training sample (sigma, noise, the three dropout coins and the
stage-2 draw p) comes from a generator seeded by (run seed, the sample's global position in the
data stream). A sample's draws therefore do not depend on the rank, worker, world size or batch
it lands in, and a resumed run redraws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fantasytalking_core.sampling import shift_sigma

from .config import LossConfig


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x0, noise [B, C, T, H, W], sigma [B] -> (x_t, target): the flow-matching input and velocity."""
    s = sigma.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
    return (1 - s) * x0 + s * noise, noise - x0


def position_generator(seed: int, position: int) -> torch.Generator:
    """A CPU generator for sample `position` of run `seed` (independent streams per position)."""
    state = np.random.SeedSequence([int(seed), int(position)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


@dataclass
class Draws:
    """The random choices of one sample; `keep_*` are 1.0 (kept) or 0.0 (dropped)."""

    sigma: float
    noise: torch.Tensor  # like the latents [16, T_lat, H, W]
    keep_image: float
    keep_audio: float
    keep_prompt: float
    p: float  # stage 2 uses the lip-masked loss when p > eta


def draw(seed: int, position: int, latent_shape: tuple[int, ...], cfg: LossConfig) -> Draws:
    """All draws of the sample at `position`: five uniforms (sigma, image, audio, prompt, p), then noise."""
    g = position_generator(seed, position)
    u = torch.rand(5, generator=g, dtype=torch.float64).tolist()
    noise = torch.randn(latent_shape, generator=g, dtype=torch.float32)
    sigma = float(shift_sigma(torch.tensor(u[0], dtype=torch.float64), cfg.shift))
    return Draws(sigma=sigma, noise=noise, keep_image=float(u[1] >= cfg.drop_image),
                 keep_audio=float(u[2] >= cfg.drop_audio), keep_prompt=float(u[3] >= cfg.drop_prompt), p=u[4])


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample lip-weighted MSE, float32 [B].

    pred, target [B, C, T, H, W]; mask [B, T, H, W] in [0, 1] (the latent lip mask M), broadcast
    over the C channels:  loss_b = sum(M * (pred - target)^2) / (C * sum(M)),  i.e. the mean
    squared error over the masked latent cells, each cell weighted by M. A sample whose mask is
    empty (sum(M) = 0: no lips were found) gets the plain MSE instead.
    """
    err = (pred.float() - target.float()).pow(2)  # [B, C, T, H, W]
    m = mask.float()[:, None]  # [B, 1, T, H, W]
    weight = m.sum(dim=(1, 2, 3, 4)) * err.shape[1]  # [B]
    masked = (err * m).sum(dim=(1, 2, 3, 4)) / weight.clamp_min(1e-12)
    plain = err.mean(dim=(1, 2, 3, 4))
    return torch.where(weight > 0, masked, plain)


def sample_losses(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
                  use_mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample loss [B]: `masked_mse` where `use_mask` [B] is True, plain MSE elsewhere."""
    plain = (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, pred.dim())))
    if mask is None or use_mask is None or not bool(use_mask.any()):
        return plain
    return torch.where(use_mask.to(plain.device), masked_mse(pred, target, mask), plain)
