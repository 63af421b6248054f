"""Stand-ins for checking the segment machinery (issue 16, item 6): a VAE that decodes exactly what it
encoded, and a DiT whose denoised output is a known function of its conditioning, so the video any
correct long-video loop makes can be computed another way (`expected_video`), frame for frame.

- :class:`ExactVAE`: latent channels 0..2 are the 8x8-block means of each latent frame's pixels (frame
  0 alone, then groups of 4, Wan's causal layout), the other 13 channels are 0; decoding repeats them
  over the group's frames. So decode(encode(v)) == v for block-constant, group-constant videos, and
  the frames a segment holds come back as the very latents they were decoded from. ``comfy()`` gives
  the same VAE with ComfyUI's call contract (frames [T, H, W, 3] in 0..1).
- :class:`EchoDiT`: the tiny Wan DiT's module layout (so the adapters attach to it) with a forward that
  predicts the velocity of a fixed target ``x0``: latent frames the I2V mask marks known are copied from
  the conditioning ``y``; each other latent frame t is
  ``0.5 * x0[t-1] + 0.3 * tanh(audio(t)) + 0.1 * tanh(reference)`` with ``audio(t)`` the mean of the
  first 3 channels of latent frame t's audio window (its valid tokens) and ``reference`` that of the
  CLIP image tokens. Any sampler ends on ``x0``; every call is recorded.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from einops import rearrange, reduce

from fantasytalking_core.adapters.attach import find_attachment
from fantasytalking_core.audio import split_windows
from fantasytalking_core.encoders import timeline_tokens
from fantasytalking_core.wan import WanConfig, WanModel, init_random_


class ExactVAE:
    """Wan's VAE contract (stride 4, 8, 8; causal first frame; 16 channels) with an exact inverse."""

    def encode(self, video: torch.Tensor) -> torch.Tensor:  # [1, 3, T, H, W] in -1..1
        first = video[:, :, :1]
        rest = reduce(video[:, :, 1:].float(), "b c (t a) h w -> b c t h w", "mean", a=4)
        z = reduce(torch.cat([first.float(), rest], dim=2), "b c t (h p) (w q) -> b c t h w", "mean", p=8, q=8)
        return torch.cat([z, z.new_zeros(z.shape[0], 13, *z.shape[2:])], dim=1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:  # -> [1, 3, T, H, W]
        z = latents[:, :3].float().repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
        return torch.cat([z[:, :, :1], z[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)

    def comfy(self) -> SimpleNamespace:
        """ComfyUI's VAE contract: encode(frames [T, H, W, 3] 0..1), decode -> [1, T, H, W, 3] 0..1."""
        return SimpleNamespace(
            encode=lambda pixels: self.encode(rearrange(pixels.float(), "t h w c -> 1 c t h w") * 2 - 1),
            decode=lambda latents: rearrange((self.decode(latents) + 1) / 2, "b c t h w -> b t h w c"))


def step(previous: torch.Tensor, audio: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """EchoDiT's rule for one generated latent frame (channels 0..2)."""
    return 0.5 * previous + 0.3 * torch.tanh(audio) + 0.1 * torch.tanh(reference)


def audio_signature(tokens: torch.Tensor, k_lens: torch.Tensor) -> torch.Tensor:
    """[B, T_lat, W, C] windows + k_lens [T_lat] -> [B, T_lat, 3]: the mean of each window's valid tokens."""
    keep = (torch.arange(tokens.shape[2])[None, :] < k_lens.reshape(-1, tokens.shape[1])[..., None]).float()
    return (tokens[..., :3] * keep[..., None]).sum(2) / keep.sum(-1, keepdim=True)


class EchoDiT(WanModel):
    def __init__(self, cfg: WanConfig | None = None):
        super().__init__(cfg or WanConfig.tiny())
        init_random_(self, seed=0)
        self.calls: list[dict] = []

    def forward(self, x, t, context, clip_fea=None, y=None, *args, **kwargs):
        att = find_attachment(self)
        cond = att.audio.condition
        audio = audio_signature(cond.tokens.float(), cond.k_lens)  # [1 or B, T_lat, 3]
        ref = clip_fea.float()[..., :3].mean(1)  # [B, 3]
        self.calls.append({"sigma": float(t.reshape(-1)[0]) / 1000, "y": y[:1].clone(), "clip": clip_fea[:1].clone(),
                           "audio": cond.tokens[:1].clone(), "k_lens": cond.k_lens.clone()})
        known, x0 = y[:, 0] > 0.5, torch.zeros_like(x)  # mask channel 0: [B, T_lat, h, w]
        for f in range(x.shape[2]):
            if bool(known[:, f].all()):
                x0[:, :3, f] = y[:, 4:7, f]
            else:
                x0[:, :3, f] = step(x0[:, :3, f - 1], audio[:, f, :, None, None].expand(x.shape[0], -1, *x.shape[-2:]),
                                    ref[:, :, None, None])
        sigma = t.float().view(-1, 1, 1, 1, 1) / 1000
        return (x.float() - x0) / sigma


def expected_video(features: torch.Tensor, adapter, total: int, fps: float, first: torch.Tensor,
                   clip: torch.Tensor, frames: int) -> SimpleNamespace:
    """What any correct loop must make, computed once over the whole video: the official window rule
    applied to the whole recording's projected tokens on the video's timeline (tokens past the
    recording's end padded with zeros and left out of each window's valid length), then the EchoDiT
    rule from latent frame 0 (`first`: the portrait's latent [3, h, w]) to the last. -> `windows`
    (tokens [1, T_lat, W, C], `k_lens`), `latents` [3, T_lat, h, w] and the decoded `frames`
    [frames, H, W, 3] in 0..1."""
    with torch.no_grad():
        tokens = adapter.project(features)
    length, timeline = tokens.shape[1], timeline_tokens(total, fps)
    padded = torch.cat([tokens, tokens.new_zeros(1, max(0, timeline - length), tokens.shape[2])], dim=1)
    w = split_windows(padded[:, :max(timeline, length)], total)
    assert all(s <= length - 1 for s, _ in w.ranges), "a window wholly past the recording: not modelled here"
    k_lens = torch.tensor([min(e, length - 1) - max(s, 0) + 1 for s, e in w.ranges])
    audio = audio_signature(w.tokens, k_lens)[0]  # [T_lat, 3]
    ref = clip.float()[0, :, :3].mean(0)  # [3]
    lat = [first]
    for f in range(1, (total - 1) // 4 + 1):
        lat.append(step(lat[-1], audio[f][:, None, None], ref[:, None, None]))
    z = torch.stack(lat, dim=1)  # [3, T_lat, h, w]
    video = ExactVAE().decode(torch.cat([z, z.new_zeros(13, *z.shape[1:])])[None])
    out = rearrange((video[0] + 1) / 2, "c t h w -> t h w c")[:frames]
    return SimpleNamespace(windows=SimpleNamespace(tokens=w.tokens, k_lens=k_lens), latents=z, frames=out)
