"""Identity adapter: ArcFace embedding -> Q-Former ID tokens -> per-block identity attention.

No public weights exist (the training module trains it). Every block's ``k_id``/``v_id`` starts
at zero, so an untrained adapter changes nothing. Like audio, the identity attention reuses the
block's cross-attention query and is added before ``o`` with weight lambda_2 (default 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..attention import attention


@dataclass(frozen=True)
class IdentityAdapterConfig:
    face_dim: int = 512  # ArcFace embedding
    face_tokens: int = 4  # the embedding is expanded to this many tokens for the Q-Former to attend
    id_dim: int = 2048  # width of the ID tokens (like the audio tokens)
    num_queries: int = 16
    depth: int = 2
    heads: int = 16
    dim: int = 5120  # DiT width
    num_blocks: int = 40

    @classmethod
    def for_wan(cls, wan_cfg, **changes) -> "IdentityAdapterConfig":
        return cls(dim=wan_cfg.dim, num_blocks=wan_cfg.num_layers, **changes)


class QFormerLayer(nn.Module):
    """Pre-norm cross-attention from the queries to the face tokens, then an MLP."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.o = nn.Linear(width, width)
        self.norm_ffn = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, queries: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        b, nq, w = queries.shape
        d = w // self.heads
        q = self.q(self.norm_q(queries)).view(b, nq, self.heads, d)
        k, v = self.kv(self.norm_kv(face)).view(b, face.shape[1], 2, self.heads, d).unbind(2)
        queries = queries + self.o(attention(q, k, v).flatten(2))
        return queries + self.ffn(self.norm_ffn(queries))


class QFormer(nn.Module):
    """Learned query tokens that read the face features: ``[B, 512]`` -> ``[B, num_queries, id_dim]``."""

    def __init__(self, cfg: IdentityAdapterConfig):
        super().__init__()
        self.cfg = cfg
        self.face_proj = nn.Linear(cfg.face_dim, cfg.face_tokens * cfg.id_dim)
        self.queries = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.id_dim) * cfg.id_dim**-0.5)
        self.layers = nn.ModuleList([QFormerLayer(cfg.id_dim, cfg.heads) for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(cfg.id_dim)

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        b = face.shape[0]
        tokens = self.face_proj(face).view(b, self.cfg.face_tokens, self.cfg.id_dim)
        queries = self.queries.expand(b, -1, -1)
        for layer in self.layers:
            queries = layer(queries, tokens)
        return self.norm_out(queries)


class IdentityAttention(nn.Module):
    def __init__(self, id_dim: int, dim: int):
        super().__init__()
        self.k_id = nn.Linear(id_dim, dim, bias=False)
        self.v_id = nn.Linear(id_dim, dim, bias=False)
        nn.init.zeros_(self.k_id.weight)
        nn.init.zeros_(self.v_id.weight)


class IdentityAdapter(nn.Module):
    """Q-Former plus per-block identity keys and values (``blocks.N.k_id``, ``blocks.N.v_id``)."""

    def __init__(self, cfg: IdentityAdapterConfig = IdentityAdapterConfig()):
        super().__init__()
        self.cfg = cfg
        self.qformer = QFormer(cfg)
        self.blocks = nn.ModuleList([IdentityAttention(cfg.id_dim, cfg.dim) for _ in range(cfg.num_blocks)])

    def condition(self, face_embedding: torch.Tensor) -> torch.Tensor:
        """ArcFace embedding ``[512]`` or ``[B, 512]`` -> ID tokens ``[B, num_queries, id_dim]``."""
        if face_embedding.dim() == 1:
            face_embedding = face_embedding[None]
        if face_embedding.dim() != 2 or face_embedding.shape[1] != self.cfg.face_dim:
            raise ValueError(
                f"face embedding must be [B, {self.cfg.face_dim}] (an ArcFace embedding), "
                f"got {tuple(face_embedding.shape)}"
            )
        if not torch.isfinite(face_embedding).all():
            raise ValueError("face embedding contains NaN or inf; re-run the face embedding on a clear photo")
        w = self.qformer.face_proj.weight
        return self.qformer(face_embedding.to(device=w.device, dtype=w.dtype))

    def attend(self, index: int, q: torch.Tensor, id_tokens: torch.Tensor, num_heads: int) -> torch.Tensor:
        """Every video token attends to all ID tokens: ``q [B, Lq, dim]`` -> ``[B, Lq, dim]``."""
        b, lq, dim = q.shape
        block = self.blocks[index]
        tokens = id_tokens.to(device=q.device, dtype=block.k_id.weight.dtype)
        if tokens.shape[0] not in (1, b):
            raise ValueError(f"ID tokens have batch {tokens.shape[0]} but the video batch is {b}")
        tokens = tokens.expand(b, -1, -1)
        k = block.k_id(tokens).view(b, -1, num_heads, dim // num_heads)
        v = block.v_id(tokens).view(b, -1, num_heads, dim // num_heads)
        return attention(q.view(b, lq, num_heads, dim // num_heads), k, v).flatten(2)
