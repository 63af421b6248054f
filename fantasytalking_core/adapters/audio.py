"""FantasyTalking's audio adapter: projection plus per-block audio attention.

State-dict names are those of the released ``fantasytalking_model.ckpt`` once flattened:
``proj_model.proj.weight``, ``proj_model.norm.{weight,bias}`` and
``audio_processor.blocks.N.cross_attn.processor.{k_proj,v_proj}.weight``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..attention import attention
from ..audio import split_windows
from .routing import RoutedAudio

# How video tokens see the audio: "frame" = frame-level windows (inference, training stage 2),
# "global" = global audio attention, every video token attends to all audio tokens of the piece
# (training stage 1).
AUDIO_MODES = ("frame", "global")
OLD_AUDIO_MODES = {"clip": "global"}  # the names before 2026-12, read from saved workflows and configs


def audio_mode(mode: str) -> str:
    """The canonical name of an audio mode (an old name maps to its new one)."""
    mode = OLD_AUDIO_MODES.get(mode, mode)
    if mode not in AUDIO_MODES:
        raise ValueError(f"audio mode must be one of {AUDIO_MODES} (old name: 'clip' = 'global'), got {mode!r}")
    return mode


@dataclass(frozen=True)
class AudioAdapterConfig:
    audio_dim: int = 768  # wav2vec2-base hidden size
    proj_dim: int = 2048
    dim: int = 5120  # DiT width
    num_blocks: int = 40

    @classmethod
    def for_wan(cls, wan_cfg, audio_dim: int = 768, proj_dim: int = 2048) -> "AudioAdapterConfig":
        return cls(audio_dim=audio_dim, proj_dim=proj_dim, dim=wan_cfg.dim, num_blocks=wan_cfg.num_layers)


@dataclass
class AudioCondition:
    """Projected audio tokens, ready for the audio attention of every block.

    Frame-level: ``tokens [B, T_lat, L_win, C]`` and ``k_lens [T_lat]`` or ``[B, T_lat]``; the
    video tokens of latent frame t attend only to window t. Global: ``tokens [B, L, C]`` and
    ``k_lens [B]`` or None; every video token attends to every audio token.
    """

    tokens: torch.Tensor
    k_lens: torch.Tensor | None = None

    def __post_init__(self) -> None:
        """The lengths are checked here, once, on the host: every window holds 1..L_win real tokens
        (the attention of every block relies on it and reads no value on the device)."""
        lens = self.k_lens
        if lens is None:
            return
        if lens.device.type != "cpu":
            lens = self.k_lens = lens.cpu()  # host values: read here once, never inside a step
        width = self.tokens.shape[2] if self.frame_level else self.tokens.shape[1]
        if lens.numel() and not bool(((lens >= 1) & (lens <= width)).all()):
            raise ValueError(f"audio k_lens must be between 1 and the window length {width}, got "
                             f"{lens.flatten().tolist()}: every window needs at least one audio token")

    @property
    def frame_level(self) -> bool:
        return self.tokens.dim() == 4

    @property
    def num_latent_frames(self) -> int | None:
        return self.tokens.shape[1] if self.frame_level else None

    def to(self, device=None, dtype=None) -> "AudioCondition":
        """The tokens on ``device``; the lengths stay on the CPU (see ``__post_init__``)."""
        return AudioCondition(self.tokens.to(device=device, dtype=dtype), self.k_lens)


class AudioProjModel(nn.Module):
    """wav2vec2 features ``[B, L, 768]`` -> audio tokens ``[B, L, 2048]`` (Linear without bias, LayerNorm)."""

    def __init__(self, audio_in_dim: int = 768, cross_attention_dim: int = 2048):
        super().__init__()
        self.proj = nn.Linear(audio_in_dim, cross_attention_dim, bias=False)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(audio_embeds))


class AudioAttention(nn.Module):
    """One block's audio keys and values; the query is the block's own cross-attention query."""

    def __init__(self, context_dim: int, hidden_dim: int):
        super().__init__()
        self.k_proj = nn.Linear(context_dim, hidden_dim, bias=False)
        self.v_proj = nn.Linear(context_dim, hidden_dim, bias=False)
        nn.init.zeros_(self.k_proj.weight)  # untrained: contributes exactly nothing
        nn.init.zeros_(self.v_proj.weight)

    def forward(self, q: torch.Tensor, cond: AudioCondition, num_heads: int, backend: str = "auto") -> torch.Tensor:
        """``q [B, Lq, dim]`` (after norm_q) -> audio attention output ``[B, Lq, dim]``."""
        b, lq, dim = q.shape
        n, d = num_heads, dim // num_heads
        tokens = cond.tokens.to(device=q.device, dtype=self.k_proj.weight.dtype)
        tokens = _match_batch(tokens, b, "audio tokens")
        k, v = self.k_proj(tokens), self.v_proj(tokens)
        if not cond.frame_level:
            lens = None if cond.k_lens is None else _match_batch(cond.k_lens.reshape(-1), b, "audio k_lens")
            return attention(q.view(b, lq, n, d), k.view(b, -1, n, d), v.view(b, -1, n, d), lens, backend).flatten(2)
        t = tokens.shape[1]
        if lq % t:
            raise ValueError(
                f"audio has windows for {t} latent frames but the video has {lq} tokens, which is not a "
                f"whole number of frames; encode the audio for the same number of frames as the video"
            )
        lens = None
        if cond.k_lens is not None:
            lens = cond.k_lens.to(q.device).reshape(-1, t)
            lens = _match_batch(lens, b, "audio k_lens").reshape(b * t)
        out = attention(
            q.reshape(b * t, lq // t, n, d), k.reshape(b * t, -1, n, d), v.reshape(b * t, -1, n, d), lens, backend
        )
        return out.reshape(b, lq, dim)


def _match_batch(x: torch.Tensor, b: int, what: str) -> torch.Tensor:
    if x.shape[0] == b:
        return x
    if x.shape[0] == 1:
        return x.expand(b, *x.shape[1:])
    raise ValueError(f"{what} have batch {x.shape[0]} but the video batch is {b}; give one audio or one per video")


def _per_block(modules: list[nn.Module]) -> nn.Module:
    """Nest modules as ``blocks.N.cross_attn.processor`` so keys match the released checkpoint."""
    root = nn.Module()
    root.blocks = nn.ModuleList()
    for m in modules:
        block, cross = nn.Module(), nn.Module()
        cross.processor = m
        block.cross_attn = cross
        root.blocks.append(block)
    return root


class AudioAdapter(nn.Module):
    """Audio projection and the per-block audio attention of FantasyTalking."""

    def __init__(self, cfg: AudioAdapterConfig = AudioAdapterConfig()):
        super().__init__()
        self.cfg = cfg
        self.proj_model = AudioProjModel(cfg.audio_dim, cfg.proj_dim)
        self.audio_processor = _per_block([AudioAttention(cfg.proj_dim, cfg.dim) for _ in range(cfg.num_blocks)])

    def processor(self, index: int) -> AudioAttention:
        return self.audio_processor.blocks[index].cross_attn.processor

    def project(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3 or features.shape[-1] != self.cfg.audio_dim:
            raise ValueError(
                f"audio features must be [B, L, {self.cfg.audio_dim}] (wav2vec2-base last_hidden_state), "
                f"got {tuple(features.shape)}"
            )
        w = self.proj_model.proj.weight
        return self.proj_model(features.to(device=w.device, dtype=w.dtype))

    def condition(self, features: torch.Tensor, num_frames: int | None = None,
                  mode: str = "frame", expand_length: int = 4) -> AudioCondition:
        """wav2vec2 features ``[B, L, 768]`` -> the condition the blocks attend to.

        As the released code does, tokens are projected first and then cut into per-latent-frame
        windows (``mode="frame"``, needs the video's ``num_frames``), or kept whole (``"global"``;
        the old name ``"clip"`` is still read).
        """
        mode = audio_mode(mode)
        tokens = self.project(features)
        if mode == "global":
            return AudioCondition(tokens, None)
        if num_frames is None:
            raise ValueError("frame-level audio needs num_frames (the number of video frames)")
        windows = split_windows(tokens, num_frames, expand_length=expand_length)
        return AudioCondition(windows.tokens, windows.k_lens)

    def attend(self, index: int, q: torch.Tensor, cond: AudioCondition | RoutedAudio, num_heads: int) -> torch.Tensor:
        if isinstance(cond, RoutedAudio):  # several speakers: one attention per source, mixed per token
            return cond.attend(self.processor(index), q, num_heads)
        return self.processor(index)(q, cond, num_heads)
