"""Runtime options of the DiT: what to speed up and how to save memory, in one typed config."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..attention import BACKENDS

FP8_MODES = ("none", "e4m3fn", "e4m3fn_fast")
INDICATORS = ("input", "time")


@dataclass(frozen=True)
class StepCacheConfig:
    """TeaCache-style step skipping (Liu et al. 2024, "Timestep Embedding Tells").

    Each call measures how much the DiT's input changed since the previous call of the same slot
    (slot = the call's position within its step, so the guidance passes run one by one each keep
    their own cache): the relative L1 change ``mean|m - m_prev| / mean|m_prev|`` of the
    ``indicator`` ("input": block 0's modulated input, as TeaCache; "time": the time modulation
    e0, as TeaCache4Wan2.1), rescaled by the polynomial ``coefficients`` (highest power first;
    (1, 0) = as measured). The rescaled changes add up while steps are skipped; a step whose sum
    stays below ``threshold`` reuses the last computed residual of the blocks
    (``output = input + residual``) instead of running them. ``threshold = 0`` never skips and
    is exactly the plain model. Steps before ``start_step``, from ``end_step`` on (when given)
    and after ``max_consecutive`` skips in a row (when given) are always computed.

    The thresholds that keep quality have to be measured on the real model (evaluation module);
    TeaCache's Wan2.1 numbers are 0.1-0.3 with its own fitted coefficients.
    """

    threshold: float = 0.0
    indicator: str = "input"
    coefficients: tuple[float, ...] = (1.0, 0.0)
    start_step: int = 1
    end_step: int | None = None
    max_consecutive: int | None = None

    def __post_init__(self) -> None:
        if not self.threshold >= 0:
            raise ValueError(f"step cache threshold must be >= 0 (0 = never skip), got {self.threshold!r}")
        if self.indicator not in INDICATORS:
            raise ValueError(f"step cache indicator must be one of {INDICATORS}, got {self.indicator!r}")
        if not self.coefficients:
            raise ValueError("step cache coefficients must hold at least one number, e.g. (1.0, 0.0)")
        object.__setattr__(self, "coefficients", tuple(float(c) for c in self.coefficients))
        if self.start_step < 0:
            raise ValueError(f"step cache start_step must be >= 0, got {self.start_step}")
        if self.max_consecutive is not None and self.max_consecutive < 1:
            raise ValueError(f"step cache max_consecutive must be >= 1 or None, got {self.max_consecutive}")


@dataclass(frozen=True)
class RuntimeOptions:
    """Speed and memory options of the DiT; the defaults are the plain model.

    - ``attention``: kernel, see ``fantasytalking_core.attention`` (``"auto"`` picks the fastest
      exact one available).
    - ``fast_rope``: RoPE in float32 real arithmetic instead of Wan's float64 complex one.
    - ``compile``: ``torch.compile`` every block (``compile_mode``, ``compile_backend`` as
      torch.compile's ``mode`` and ``backend``).
    - ``fp8``: ``"e4m3fn"`` stores the block weights in float8 e4m3fn with a per-tensor scale
      (half the memory of bf16) and computes in the previous dtype; ``"e4m3fn_fast"`` also runs the
      matmuls in fp8 on GPUs that have them (compute capability >= 8.9: Ada, Hopper, Blackwell).
      One-way: the weights are quantised in place.
    - ``block_swap``: keep the last N blocks in (pinned) CPU memory and stream each one in just
      before it runs, overlapped with the previous block's compute (``swap_prefetch`` blocks
      ahead). Inference only. ``"auto"``: at the first forward, the fewest blocks that make the
      peak predicted for this model, batch and size (``perf.memory``, a meta-device forward) fit
      the GPU's memory beside what else is on it; none on a card where everything fits.
    - ``step_cache``: a :class:`StepCacheConfig` (or a float threshold) to skip steps.
    - ``seq_parallel``: Ulysses sequence parallelism over the initialised ``torch.distributed``
      world (launch with torchrun); every rank gets the same inputs and returns the same output.
    """

    attention: str = "auto"
    fast_rope: bool = False
    compile: bool = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    fp8: str = "none"
    block_swap: int | str = 0
    swap_prefetch: int = 1
    step_cache: StepCacheConfig | None = None
    seq_parallel: bool = False

    def __post_init__(self) -> None:
        if self.attention not in BACKENDS:
            raise ValueError(f"attention must be one of {BACKENDS}, got {self.attention!r}")
        fp8 = ("e4m3fn_fast" if self.fp8 else "none") if isinstance(self.fp8, bool) else self.fp8
        if fp8 not in FP8_MODES:
            raise ValueError(f"fp8 must be one of {FP8_MODES}, got {self.fp8!r}")
        object.__setattr__(self, "fp8", fp8)
        if self.block_swap != "auto" and (isinstance(self.block_swap, bool) or not isinstance(self.block_swap, int)
                                          or self.block_swap < 0):
            raise ValueError(f"block_swap must be an int >= 0 (blocks kept on the CPU) or 'auto', "
                             f"got {self.block_swap!r}")
        if self.swap_prefetch < 1:
            raise ValueError(f"swap_prefetch must be >= 1, got {self.swap_prefetch}")
        if isinstance(self.step_cache, (int, float)) and not isinstance(self.step_cache, bool):
            object.__setattr__(self, "step_cache", StepCacheConfig(threshold=float(self.step_cache)))
        elif self.step_cache is not None and not isinstance(self.step_cache, StepCacheConfig):
            raise ValueError(f"step_cache must be None, a threshold or a StepCacheConfig, got {self.step_cache!r}")
        if self.compile and self.block_swap and self.compile_mode and "reduce-overhead" in self.compile_mode:
            raise ValueError("compile_mode 'reduce-overhead' (CUDA graphs) cannot be combined with block_swap, "
                             "which moves weights between calls; use 'max-autotune-no-cudagraphs' or None")

    def with_(self, **changes) -> "RuntimeOptions":
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict) -> "RuntimeOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown runtime options {unknown}; known: {sorted(known)}")
        values = dict(values)
        if isinstance(values.get("step_cache"), dict):
            values["step_cache"] = StepCacheConfig(**values["step_cache"])
        return cls(**values)
