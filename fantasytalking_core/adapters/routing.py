"""Audio routed by region: several audio conditions, each heard by its own part of the picture.

FantasyTalking's audio attention output is added before the cross-attention's output projection
``o``, which is linear. So for several speakers the adapter computes one audio attention per source
(each speaker's track, and the background's features of silence) from the block's one shared
query, and mixes them per video token with weights that sum to one:

    audio(q)[token] = sum_s weights[s, token] * attention(q, source_s)[token]

``o`` then sees exactly what it would see if each token had heard only its own mixture; nothing is
trained. The weights live on the DiT's token grid (latent frame, row, column after the 1x2x2
patches); ``fantasytalking_core/speakers.py`` makes them from picture regions.

One source whose weight is 1 on every token is returned as its attention alone, untouched, so a
single full-frame speaker is today's single-speaker result bit for bit; a source whose weight is 0
on every token of the call is not computed at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


class SourceSet:
    """Several audio conditions for the same latent frames (``sources``), seen from outside as one:
    what the attachment and the hosts ask of any audio condition."""

    sources: list[Any]

    @property
    def frame_level(self) -> bool:
        return self.sources[0].frame_level

    @property
    def num_latent_frames(self) -> int | None:
        return self.sources[0].num_latent_frames


@dataclass
class RoutedAudio(SourceSet):
    """``sources``: one audio condition per source (speakers first, the background last), all for the
    same latent frames; ``weights [S, T_lat, gh, gw]``: per source and token, >= 0, summing to 1 over
    the sources (a ``T_lat`` of 1 holds for every frame). The weights stay on the CPU (float32)
    until a block needs them; which sources a call must compute is decided once, here."""

    sources: list[Any]
    weights: torch.Tensor
    _live: list[int] = field(init=False, repr=False)
    _whole: int | None = field(init=False, repr=False)
    _flat: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        w = self.weights
        if w.dim() != 4 or w.shape[0] != len(self.sources):
            raise ValueError(f"routing weights must be [sources={len(self.sources)}, T_lat, h, w], got {tuple(w.shape)}")
        frames = {s.num_latent_frames for s in self.sources}
        if len(frames) != 1:
            raise ValueError(f"the routed audio sources cover different latent frame counts: {sorted(map(str, frames))}")
        if w.shape[1] not in (1, *frames):
            raise ValueError(f"routing weights have {w.shape[1]} latent frames but the audio has {frames.pop()}")
        total = w.sum(0)
        if (w < 0).any() or not torch.allclose(total, torch.ones_like(total), atol=1e-4):
            raise ValueError("routing weights must be >= 0 and sum to 1 over the sources on every token")
        self._live = [s for s in range(w.shape[0]) if bool((w[s] != 0).any())]
        self._whole = self._live[0] if len(self._live) == 1 and bool((w[self._live[0]] == 1).all()) else None

    def to(self, device=None, dtype=None) -> "RoutedAudio":
        return RoutedAudio([s.to(device, dtype) for s in self.sources], self.weights)

    # -- called by the adapter in every block ---------------------------------------------------
    def attend(self, processor: Callable[..., torch.Tensor], q: torch.Tensor, num_heads: int) -> torch.Tensor:
        """``processor(q, condition, num_heads)`` per live source, mixed per token: ``[B, Lq, dim]``."""
        if self._whole is not None:
            return processor(q, self.sources[self._whole], num_heads)
        weights = self._token_weights(q.shape[1], q.device)  # [S, Lq]
        out = None
        for s in self._live:
            part = processor(q, self.sources[s], num_heads)
            w = weights[s].to(part.dtype)[None, :, None]
            out = part * w if out is None else out.addcmul_(part, w)
        return out

    def _token_weights(self, length: int, device: torch.device) -> torch.Tensor:
        key = (length, str(device))
        if key not in self._flat:
            s, t, gh, gw = self.weights.shape
            frames = self.num_latent_frames or t
            if length != frames * gh * gw:
                raise ValueError(
                    f"the speaker regions are on a {gh}x{gw} token grid ({gh * 16}x{gw * 16} pixels) but the video "
                    f"has {length} tokens over {frames} latent frames ({length // max(frames, 1)} per frame): "
                    f"make the regions at the video's size")
            self._flat[key] = self.weights.expand(s, frames, gh, gw).reshape(s, length).to(device)
        return self._flat[key]
