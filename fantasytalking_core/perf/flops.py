"""FLOPs of a DiT forward and of a denoising step, written out from the config.

Only matrix products are counted (2 FLOPs per multiply-add), the convention of model FLOP
utilisation: linear layers, the patch-embedding convolution and the two products of every
attention (``Q K^T`` and ``P V``). Norms, RoPE, softmax and modulation are elementwise and left
out, as ``torch.utils.flop_counter.FlopCounterMode`` leaves them out; the tests check this count
against that counter on a real forward. Everything scales with the batch, so a step with P
guidance passes costs P forwards whether they run batched or one by one.

For the 14B model at 512x512 and 81 frames (21 x 32 x 32 = 21,504 tokens) a forward is about
0.91 PFLOP: 40 blocks x (12 L D^2 self/cross projections + 4 L D F feed-forward + 4 L^2 D
self-attention + 4 L (512 + 257) D cross-attention) plus small terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..frames import check_frames, latent_frames
from ..wan.config import WanConfig


@dataclass(frozen=True)
class TokenGrid:
    """The DiT's token grid for a video: latent frames x patch rows x patch columns."""

    frames: int
    height: int
    width: int

    @property
    def tokens(self) -> int:
        return self.frames * self.height * self.width

    @classmethod
    def for_video(cls, cfg: WanConfig, height: int, width: int, num_frames: int) -> "TokenGrid":
        """Pixels and video frames -> tokens: VAE stride (4, 8, 8), then the patch (1, 2, 2)."""
        check_frames(num_frames, least=1)
        pt, ph, pw = cfg.patch_size
        if height % (8 * ph) or width % (8 * pw):
            raise ValueError(f"height and width must be multiples of {8 * ph}, got {height}x{width}")
        t_lat = latent_frames(num_frames)
        if t_lat % pt:
            raise ValueError(f"{t_lat} latent frames are not a multiple of the temporal patch {pt}")
        return cls(t_lat // pt, height // 8 // ph, width // 8 // pw)


def forward_flops(cfg: WanConfig, grid: TokenGrid, batch: int = 1, audio_window: int = 0,
                  audio_dim: int = 2048, global_audio_tokens: int = 0) -> dict[str, int]:
    """FLOPs of one DiT forward with the FantasyTalking audio attention, by part, plus ``"total"``.

    ``audio_window``: keys per latent frame of frame-level audio (padded window length, the
    attention runs over all of it); ``global_audio_tokens``: keys of global audio attention (every video token sees all the audio tokens) instead.
    ``audio_dim`` is the projected audio width (2048; the tiny test adapters use less).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    d, f, n_layers = cfg.dim, cfg.ffn_dim, cfg.num_layers
    L = grid.tokens
    text = cfg.text_len  # the text context is always padded to text_len (Wan's 512)
    img = cfg.clip_tokens if cfg.model_type == "i2v" else 0
    mm = lambda m, k, n: 2 * m * k * n  # noqa: E731  (an [m, k] x [k, n] product)

    per_block = {
        "self_attn_proj": 4 * mm(L, d, d),
        "self_attn_scores": 2 * mm(L, L, d),  # Q K^T and P V, summed over heads
        "cross_attn_proj": 2 * mm(L, d, d) + 2 * mm(text + img, d, d),  # q, o on video; k, v on context
        "cross_attn_scores": 2 * mm(L, text + img, d),
        "ffn": mm(L, d, f) + mm(L, f, d),
    }
    audio = 0
    if audio_window:
        audio = 2 * mm(grid.frames * audio_window, audio_dim, d) + 2 * mm(L, audio_window, d)
    elif global_audio_tokens:
        audio = 2 * mm(global_audio_tokens, audio_dim, d) + 2 * mm(L, global_audio_tokens, d)
    per_block["audio_attn"] = audio

    out = {k: n_layers * v for k, v in per_block.items()}
    patch = math.prod(cfg.patch_size)
    out["patch_embedding"] = mm(L, cfg.in_dim * patch, d)
    out["text_embedding"] = mm(text, cfg.text_dim, d) + mm(text, d, d)
    out["image_embedding"] = mm(img, cfg.clip_dim, cfg.clip_dim) + mm(img, cfg.clip_dim, d) if img else 0
    out["time_embedding"] = mm(1, cfg.freq_dim, d) + mm(1, d, d) + mm(1, d, 6 * d)
    out["head"] = mm(L, d, patch * cfg.out_dim)
    out = {k: batch * v for k, v in out.items()}
    out["total"] = sum(out.values())
    return out


def step_flops(cfg: WanConfig, grid: TokenGrid, passes: int = 3, **audio) -> int:
    """FLOPs of one denoising step: ``passes`` forwards of batch 1 (batched or not, the same work)."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    return forward_flops(cfg, grid, batch=passes, **audio)["total"]
