"""Wan2.1 DiT configuration with named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class WanConfig:
    """Hyper-parameters of a Wan2.1 DiT. Field names follow Wan's ``WanModel.__init__``."""

    model_type: str = "i2v"  # "t2v" or "i2v" (I2V adds img_emb and k_img/v_img per block)
    dim: int = 5120
    ffn_dim: int = 13824
    num_heads: int = 40
    num_layers: int = 40
    in_dim: int = 36  # I2V: 16 noise + 4 frame mask + 16 first-frame latent channels
    out_dim: int = 16
    text_dim: int = 4096  # UMT5-XXL hidden size
    text_len: int = 512  # text context is zero-padded to this many tokens, as Wan does
    freq_dim: int = 256
    clip_dim: int = 1280  # CLIP ViT-H/14 penultimate hidden size
    clip_tokens: int = 257  # image tokens at the front of the I2V context
    patch_size: tuple[int, int, int] = (1, 2, 2)
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    attention_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.model_type not in ("t2v", "i2v"):
            raise ValueError(f"model_type must be 't2v' or 'i2v', got {self.model_type!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if (self.dim // self.num_heads) % 2:
            raise ValueError(f"head_dim {self.dim // self.num_heads} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def with_(self, **changes) -> "WanConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def wan21_i2v_14b(cls) -> "WanConfig":
        """Wan2.1-I2V-14B (480P and 720P share the DiT)."""
        return cls()

    @classmethod
    def wan21_t2v_14b(cls) -> "WanConfig":
        return cls(model_type="t2v", in_dim=16)

    @classmethod
    def wan21_t2v_1_3b(cls) -> "WanConfig":
        return cls(model_type="t2v", in_dim=16, dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)

    @classmethod
    def tiny(cls, model_type: str = "i2v") -> "WanConfig":
        """A few-megabyte model with the real layout (head_dim 128 like every Wan2.1 model)."""
        return cls(
            model_type=model_type,
            dim=256,
            ffn_dim=512,
            num_heads=2,
            num_layers=2,
            in_dim=36 if model_type == "i2v" else 16,
            text_dim=64,
            text_len=32,
            clip_dim=64,
        )

    @classmethod
    def preset(cls, name: str) -> "WanConfig":
        presets = {
            "wan21_i2v_14b": cls.wan21_i2v_14b,
            "wan21_t2v_14b": cls.wan21_t2v_14b,
            "wan21_t2v_1_3b": cls.wan21_t2v_1_3b,
            "tiny": cls.tiny,
        }
        if name not in presets:
            raise ValueError(f"unknown Wan preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()
