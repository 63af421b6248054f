"""The Wan2.1 diffusion transformer (T2V and I2V), with Wan's own module names.

Module names are the checkpoint keys of the official single files (``blocks.7.cross_attn.k_img``,
``head.modulation``, ...), so loading is a plain ``load_state_dict(strict=True)``. Numerics follow
the official code (``wan/modules/model.py`` and FantasyTalking's copy, ``wan_video_dit.py``, run
under a bf16 autocast): float64 RoPE; float32 modulation; the time embedding, time projection and
output head in float32 whatever the weights' dtype (the official float32 autocast regions); the
patch embedding's output in the compute dtype, the residual stream float32 from block 0's first
residual add on. With bf16 weights every matmul of the blocks runs in bf16, as under autocast.

``WanModel.forward`` is the one composition of the model. What the speed and memory options
change goes through one explicit hook, ``model.runner`` (a :class:`Runner`): which latent frames
this process computes, the RoPE table, the block loop and the gather of the output. The plain
:class:`Runner` is the model as released; ``fantasytalking_core.perf.configure`` installs its
``Runtime`` (attention kernel, fast RoPE, compiled blocks, block swap, step cache, sequence
parallel) and ``unconfigure`` puts the plain one back.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..attention import attention
from .config import WanConfig


def sinusoidal_embedding_1d(dim: int, position: torch.Tensor) -> torch.Tensor:
    """Timestep embedding ``[B] -> [B, dim]`` (cos then sin, float64 like Wan)."""
    half = dim // 2
    position = position.to(torch.float64)
    freqs = torch.pow(10000, -torch.arange(half, device=position.device, dtype=torch.float64) / half)
    sinusoid = torch.outer(position, freqs)
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


def rope_params(max_len: int, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Complex rotations ``[max_len, dim/2]`` for one axis."""
    inv = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv)
    return torch.polar(torch.ones_like(angles), angles)


def rope_freqs(head_dim: int, max_len: int = 1024) -> torch.Tensor:
    """Wan's 3D RoPE table ``[max_len, head_dim/2]``: time, height and width bands side by side."""
    d = head_dim
    return torch.cat(
        [rope_params(max_len, d - 4 * (d // 6)), rope_params(max_len, 2 * (d // 6)), rope_params(max_len, 2 * (d // 6))],
        dim=1,
    )


def rope_grid(freqs: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Rotations for every token of an (f, h, w) grid, in token order: ``[f*h*w, 1, head_dim/2]``."""
    f, h, w = grid
    c = freqs.shape[1]
    ft, fh, fw = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    if max(f, h, w) > freqs.shape[0]:
        raise ValueError(f"latent grid {grid} exceeds the RoPE table length {freqs.shape[0]}")
    table = torch.cat(
        [
            ft[:f].view(f, 1, 1, -1).expand(f, h, w, -1),
            fh[:h].view(1, h, 1, -1).expand(f, h, w, -1),
            fw[:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ],
        dim=-1,
    )
    return table.reshape(f * h * w, 1, -1)


def rope_apply(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, L, N, D]`` by ``rotations [L, 1, D/2]`` (float64, as Wan does)."""
    b, length, n, d = x.shape
    xc = torch.view_as_complex(x.to(torch.float64).reshape(b, length, n, d // 2, 2))
    out = torch.view_as_real(xc * rotations.to(xc.device)).reshape(b, length, n, d)
    return out.to(torch.float32)


def rope_cos_sin(rotations: torch.Tensor) -> torch.Tensor:
    """Wan's complex rotations ``[L, 1, D/2]`` -> float32 ``[L, 1, D/2, 2]`` (cos, sin) for :func:`rope_apply_real`."""
    return torch.view_as_real(rotations).to(torch.float32)


def rope_apply_real(x: torch.Tensor, cos_sin: torch.Tensor) -> torch.Tensor:
    """The rotation of :func:`rope_apply` in float32 real arithmetic, returned in ``x``'s dtype.

    ``x [B, L, N, D]``, ``cos_sin [L, 1, D/2, 2]``. Wan rotates in float64 and hands float32 to the
    attention, which casts to the weights' dtype; this skips the float64 detour and the extra cast
    (about 1e-7 relative difference in float32), and, unlike complex ops, torch.compile fuses it.
    """
    b, length, n, d = x.shape
    pairs = x.float().reshape(b, length, n, d // 2, 2)
    cos, sin = cos_sin[..., 0].to(x.device), cos_sin[..., 1].to(x.device)  # [L, 1, D/2]
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.reshape(b, length, n, d).to(x.dtype)


def apply_rotations(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Wan's float64 RoPE for a complex table, the float32 one for a real (cos, sin) table."""
    return rope_apply(x, rotations) if rotations.is_complex() else rope_apply_real(x, rotations)


class WanRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class WanLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the weights' dtype."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = False):
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return nn.functional.layer_norm(x.float(), self.normalized_shape, None, None, self.eps).type_as(x)
        return nn.functional.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        ).type_as(x)


def float32_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` in float32 whatever the weights' dtype (upcast; an fp8 ``scale_weight`` applied):
    what ``autocast(dtype=float32)`` does inside the official bf16 autocast. Exactly ``linear(x)``
    for float32 weights."""
    w = linear.weight.float()
    scale = getattr(linear, "scale_weight", None)
    if scale is not None:
        w = w * scale.float()
    return F.linear(x.float(), w, None if linear.bias is None else linear.bias.float())


class Float32Sequential(nn.Sequential):
    """``nn.Sequential`` (same keys) whose Linear layers compute in float32: the time embedding and
    time projection, which the official DiT runs in a float32 autocast region."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self:
            x = float32_linear(m, x) if isinstance(m, nn.Linear) else m(x.float())
        return x


def _dtype_of(linear: nn.Linear) -> torch.dtype:
    """The dtype a linear layer computes in: its weights', or ``compute_dtype`` for fp8-stored weights."""
    return getattr(linear, "compute_dtype", None) or linear.weight.dtype


class WanSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6, backend: str = "auto"):
        super().__init__()
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.backend = backend
        self.parallel = None  # perf.parallel sets a sequence-parallel group here (self-attention only)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
        b, s, n, d = *x.shape[:2], self.num_heads, self.head_dim
        x = x.to(_dtype_of(self.q))
        q = self.norm_q(self.q(x)).view(b, s, n, d)
        k = self.norm_k(self.k(x)).view(b, s, n, d)
        v = self.v(x).view(b, s, n, d)
        q, k = apply_rotations(q, rotations), apply_rotations(k, rotations)
        if self.parallel is not None:  # Ulysses: all-to-all to whole sequence, local heads, and back
            out = self.parallel.attention(q, k, v, backend=self.backend)
        else:
            out = attention(q, k, v, backend=self.backend)
        return self.o(out.flatten(2).to(x.dtype))


class WanCrossAttention(WanSelfAttention):
    """Text cross-attention (T2V) or text + image cross-attention (I2V).

    The query ``norm_q(q(x))`` is computed once and the attention outputs are summed before ``o``:
    FantasyTalking's audio and identity attention hook in exactly there (see adapters/attach.py).
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6,
                 backend: str = "auto", image: bool = False):
        super().__init__(dim, num_heads, qk_norm, eps, backend)
        self.image = image
        if image:
            self.k_img = nn.Linear(dim, dim)
            self.v_img = nn.Linear(dim, dim)
            self.norm_k_img = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor, clip_tokens: int = 0) -> torch.Tensor:
        b, n, d = x.shape[0], self.num_heads, self.head_dim
        x = x.to(_dtype_of(self.q))
        context = context.to(x.dtype)
        context_img, context = context[:, :clip_tokens], context[:, clip_tokens:]
        q = self.norm_q(self.q(x)).view(b, -1, n, d)
        k = self.norm_k(self.k(context)).view(b, -1, n, d)
        v = self.v(context).view(b, -1, n, d)
        out = attention(q, k, v, backend=self.backend).flatten(2)
        if self.image and clip_tokens:
            k_img = self.norm_k_img(self.k_img(context_img)).view(b, -1, n, d)
            v_img = self.v_img(context_img).view(b, -1, n, d)
            out = out + attention(q, k_img, v_img, backend=self.backend).flatten(2)
        return self.o(out)


class WanAttentionBlock(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = WanLayerNorm(dim, cfg.eps)
        self.self_attn = WanSelfAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps, cfg.attention_backend)
        self.norm3 = WanLayerNorm(dim, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = WanCrossAttention(
            dim, cfg.num_heads, cfg.qk_norm, cfg.eps, cfg.attention_backend, image=cfg.model_type == "i2v"
        )
        self.norm2 = WanLayerNorm(dim, cfg.eps)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor, rotations: torch.Tensor,
                context: torch.Tensor, clip_tokens: int) -> torch.Tensor:
        """``x [B, L, dim]`` residual stream (block 0: the patch embedding's dtype; float32 after the
        first residual add), ``e [B, 6, dim]`` float32 modulation. Returns float32."""
        e = (self.modulation.float() + e).chunk(6, dim=1)
        y = self.self_attn(self.norm1(x).float() * (1 + e[1]) + e[0], rotations)
        x = x + y.float() * e[2]
        x = x + self.cross_attn(self.norm3(x), context, clip_tokens).float()
        y = self.ffn((self.norm2(x).float() * (1 + e[4]) + e[3]).to(_dtype_of(self.ffn[0])))
        return x + y.float() * e[5]


class Head(nn.Module):
    def __init__(self, dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float = 1e-6):
        super().__init__()
        self.norm = WanLayerNorm(dim, eps)
        self.head = nn.Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``x [B, L, dim]``, ``e [B, dim]`` -> ``[B, L, prod(patch)*out_dim]``, all in float32 (the
        official head runs in a float32 autocast region)."""
        e = (self.modulation.float() + e.unsqueeze(1)).chunk(2, dim=1)
        return float32_linear(self.head, self.norm(x).float() * (1 + e[1]) + e[0])


class MLPProj(nn.Module):
    """CLIP image tokens -> DiT width (``img_emb.proj.{0,1,3,4}``)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim)
        )

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.proj(image_embeds)


class Runner:
    """The parts of :meth:`WanModel.forward` that a runtime may change, as the plain model does them.

    ``fantasytalking_core.perf.Runtime`` subclasses it; ``WanModel.forward`` calls these four
    methods and nothing else of it, so the forward is written once. ``fast_rope``: the RoPE table
    as float32 (cos, sin) pairs instead of Wan's float64 complex one (see :func:`apply_rotations`).
    """

    def __init__(self, fast_rope: bool = False):
        self.fast_rope = fast_rope

    def frames(self, frames: int, tokens_per_frame: int) -> tuple[int, int]:
        """The latent frames ``[start, stop)`` this process computes: all of them."""
        return 0, frames

    def rotations(self, head_dim: int, grid: tuple[int, int, int], start: int, stop: int,
                  device: torch.device) -> torch.Tensor:
        """RoPE of the tokens of latent frames ``[start, stop)`` of the full ``grid`` (complex, or
        float32 (cos, sin) with ``fast_rope``)."""
        per_frame = grid[1] * grid[2]
        table = rope_grid(rope_freqs(head_dim), grid)[start * per_frame: stop * per_frame]
        return (rope_cos_sin(table) if self.fast_rope else table).to(device)

    def run_blocks(self, model: "WanModel", x: torch.Tensor, e0: torch.Tensor, rotations: torch.Tensor,
                   context: torch.Tensor, clip_tokens: int, t: torch.Tensor) -> torch.Tensor:
        """Every block in order: ``x [B, L, dim]`` -> float32 ``[B, L, dim]``."""
        for block in model.blocks:
            x = block(x, e0, rotations, context, clip_tokens)
        return x

    def gather(self, out: torch.Tensor, frames: int) -> torch.Tensor:
        """The prediction of all ``frames`` latent frames from this process's part: its own."""
        return out


class WanModel(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = Float32Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = Float32Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList([WanAttentionBlock(cfg) for _ in range(cfg.num_layers)])
        self.head = Head(dim, cfg.out_dim, cfg.patch_size, cfg.eps)
        if cfg.model_type == "i2v":
            self.img_emb = MLPProj(cfg.clip_dim, dim)
        self.runner: Runner = Runner()  # what perf/ may change in forward (see Runner)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``t [B]`` (0..1000) -> ``e [B, dim]`` and the block modulation ``e0 [B, 6, dim]``, computed in
        float32 whatever the weights' dtype (see :class:`Float32Sequential`)."""
        e = self.time_embedding(sinusoidal_embedding_1d(self.cfg.freq_dim, t).float())
        e0 = self.time_projection(e).unflatten(1, (6, self.cfg.dim))
        return e, e0

    def embed_context(self, context: torch.Tensor, clip_fea: torch.Tensor | None) -> torch.Tensor:
        """Text ``[B, L<=text_len, text_dim]`` zero-padded to ``text_len`` as Wan does, after the image tokens."""
        b, length, width = context.shape
        if length > self.cfg.text_len:
            raise ValueError(f"text context has {length} tokens; the model takes at most {self.cfg.text_len}")
        if width != self.cfg.text_dim:
            raise ValueError(f"text context width is {width}; this model expects {self.cfg.text_dim} (UMT5-XXL)")
        padded = context.new_zeros(b, self.cfg.text_len, width)
        padded[:, :length] = context
        ctx = self.text_embedding(padded.to(self.text_embedding[0].weight.dtype))
        if clip_fea is not None:
            ctx = torch.cat([self.img_emb(clip_fea.to(self.img_emb.proj[1].weight.dtype)), ctx], dim=1)
        return ctx

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        clip_fea: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the flow velocity.

        x ``[B, 16, T_lat, H/8, W/8]`` noisy latent; t ``[B]`` timesteps (sigma*1000); context
        ``[B, L_text, text_dim]``; I2V also needs clip_fea ``[B, 257, clip_dim]`` and y
        ``[B, in_dim-16, T_lat, H/8, W/8]`` (frame mask + first-frame latent). Returns float32
        ``[B, out_dim, T_lat, H/8, W/8]``.
        """
        run = self.runner
        x = self.join_inputs(x, clip_fea, y)  # [B, in_dim, F, H, W]
        frames, (_, ph, pw) = x.shape[2], self.cfg.patch_size
        start, stop = run.frames(frames, (x.shape[3] // ph) * (x.shape[4] // pw))
        if (start, stop) != (0, frames):
            x = x[:, :, start:stop]  # this process's latent frames (sequence parallel)
        tokens, grid = self.embed_video(x)  # [B, f*h*w, dim] in the compute dtype, grid (f, h, w)
        rotations = run.rotations(self.cfg.head_dim, (frames, *grid[1:]), start, stop, tokens.device)
        e, e0 = self.embed_time(self.batch_timesteps(t, tokens))
        clip_tokens = clip_fea.shape[1] if clip_fea is not None else 0
        context = self.embed_context(context, clip_fea)
        tokens = run.run_blocks(self, tokens, e0, rotations, context, clip_tokens, t)
        return run.gather(self.unpatchify(self.head(tokens, e), grid), frames)

    # -- the steps of forward -----------------------------------------------------------------
    def join_inputs(self, x: torch.Tensor, clip_fea: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor:
        """Check the inputs and concatenate the I2V conditioning: ``[B, in_dim, T_lat, H/8, W/8]``."""
        cfg = self.cfg
        if cfg.model_type == "i2v" and (clip_fea is None or y is None):
            raise ValueError("an I2V model needs clip_fea (CLIP image tokens) and y (mask + image latent)")
        if y is not None:
            x = torch.cat([x, y.to(x.dtype)], dim=1)
        if x.shape[1] != cfg.in_dim:
            raise ValueError(f"latent input has {x.shape[1]} channels; this model expects {cfg.in_dim}")
        _, ph, pw = cfg.patch_size
        if x.shape[3] % ph or x.shape[4] % pw:
            raise ValueError(f"latent size {tuple(x.shape[3:])} must be divisible by the patch size {(ph, pw)}")
        return x

    def embed_video(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Patchify: ``[B, in_dim, F, H, W]`` -> tokens ``[B, f*h*w, dim]`` in the weights' dtype (as the
        official code under autocast: block 0's first norm sees them rounded) and the grid (f, h, w)."""
        x = self.patch_embedding(x.to(self.dtype))  # [B, dim, f, h, w]
        grid = tuple(x.shape[2:])
        return rearrange(x, "b c f h w -> b (f h w) c"), grid

    def batch_timesteps(self, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``t`` as one value per batch row, on the tokens' device."""
        t = torch.as_tensor(t, device=tokens.device)
        return t.reshape(-1).expand(tokens.shape[0])

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Head output ``[B, f*h*w, prod(patch)*out_dim]`` -> float32 ``[B, out_dim, f*pt, h*ph, w*pw]``."""
        (f, h, w), (pt, ph, pw) = grid, self.cfg.patch_size
        return rearrange(
            x.float(), "b (f h w) (p q r c) -> b c (f p) (h q) (w r)", f=f, h=h, w=w, p=pt, q=ph, r=pw
        )


def init_random_(model: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Fill every parameter with seeded noise (norm scales near 1), for tests and the tiny preset.

    Wan's own init zeroes the head, so an untrained model would output exactly 0 and hide bugs.
    """
    gen = torch.Generator().manual_seed(seed)
    norm_scales = {
        id(m.weight) for m in model.modules() if isinstance(m, (nn.LayerNorm, WanRMSNorm)) and m.weight is not None
    }
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=gen) * std
            if id(p) in norm_scales:
                noise = noise + 1.0
            p.copy_(noise.to(p.dtype))
    return model
