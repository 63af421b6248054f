"""Flow-matching sampling for FantasyTalking: sigma schedule, solvers, and audio/text guidance.

Conventions (as in Wan2.1 and the official FantasyTalking code):
- noisy sample  x_t = (1 - sigma) * x0 + sigma * noise, sigma in [0, 1], timestep = 1000 * sigma;
- the model predicts the velocity v = noise - x0, so the clean estimate is x0 = x_t - sigma * v;
- an Euler step is x_next = x + (sigma_next - sigma) * v (the official `FlowMatchScheduler.step`).

A "model" here is any callable `fn(x, sigma) -> v` (k-diffusion style); the solvers are pure
functions of it and of a 1-D, strictly decreasing schedule `sigmas` whose last entry is the final
noise level (0 for a full denoise). Guidance turns several conditioned passes into one `fn`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
StopCheck = Callable[[], bool]


# ----------------------------------------------------------------------------- schedule


def flow_sigmas(
    steps: int, shift: float = 5.0, sigma_max: float = 1.0, sigma_min: float = 0.0
) -> torch.Tensor:
    """Shifted flow-matching schedule, float32 `[steps + 1]`, from shift(sigma_max) down to 0.

    Same numbers as the official `FlowMatchScheduler(shift=5, sigma_min=0.0, extra_one_step=True)`:
    `linspace(sigma_max, sigma_min, steps + 1)[:-1]`, then `s' = shift*s / (1 + (shift-1)*s)`,
    computed in float32 in that order. The official scheduler keeps only those `steps` values
    and steps to 0 after the last one; here the final 0 is appended to the schedule instead.
    The model's timestep is `1000 * sigma`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite number > 0, got {shift!r} (FantasyTalking uses 5.0)")
    if not (0.0 <= sigma_min < sigma_max <= 1.0):
        raise ValueError(
            f"need 0 <= sigma_min < sigma_max <= 1, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
        )
    sigmas = shift_sigma(torch.linspace(sigma_max, sigma_min, steps + 1, dtype=torch.float32)[:-1], shift)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """The schedule shift: sigma -> shift*sigma / (1 + (shift-1)*sigma); more time at high noise.
    Training draws its noise levels through it too, so both see the same distribution."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def _check_schedule(sigmas: torch.Tensor) -> list[float]:
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(
            "sigmas must be a 1-D tensor with at least 2 entries (see flow_sigmas), got "
            f"{getattr(sigmas, 'shape', type(sigmas))}"
        )
    s = [float(v) for v in sigmas]
    if not all(math.isfinite(v) for v in s) or s[0] > 1.0 or s[-1] < 0.0:
        raise ValueError(f"sigmas must lie in [0, 1], got first {s[0]} and last {s[-1]}")
    if any(b >= a for a, b in zip(s, s[1:])):
        raise ValueError(f"sigmas must be strictly decreasing, got {s}")
    return s


def _step_begin(i: int, n: int, should_stop: StopCheck | None) -> None:
    if should_stop is not None and should_stop():
        raise InterruptedError(f"sampling stopped by should_stop() before step {i + 1} of {n}")


# ----------------------------------------------------------------------------- solvers


@torch.no_grad()
def sample_euler(
    fn: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback | None = None,
    should_stop: StopCheck | None = None,
) -> torch.Tensor:
    """First-order flow ODE solver: `x <- x + (sigma_next - sigma) * v` (the official sampler).

    `x` is the sample at `sigmas[0]` (pure noise when sigmas[0] == 1). After each step `i`,
    `callback(i, total, x, denoised)` receives the new sample and that step's x0 estimate; it may
    raise to abort. `should_stop()` is checked before every step and raises `InterruptedError`.
    """
    s = _check_schedule(sigmas)
    n = len(s) - 1
    for i in range(n):
        _step_begin(i, n, should_stop)
        v = fn(x, sigmas[i])
        denoised = x - s[i] * v
        x = x + v * (sigmas[i + 1] - sigmas[i])  # in the schedule's dtype, as the official step
        if callback is not None:
            callback(i, n, x, denoised)
    return x


def _log_snr(sigma: float) -> float:
    """lambda = log(alpha / sigma) with alpha = 1 - sigma; -inf at sigma 1, +inf at sigma 0."""
    if sigma >= 1.0:
        return -math.inf
    if sigma <= 0.0:
        return math.inf
    return math.log((1.0 - sigma) / sigma)


def _uni_pc_update(
    x: torch.Tensor,
    sigma_s: float,
    sigma_t: float,
    m0: torch.Tensor,
    history: Sequence[tuple[float, torch.Tensor]],
    m_t: torch.Tensor | None = None,
) -> torch.Tensor:
    """One UniP (m_t None) or UniC (m_t = x0 estimate at t) step from sigma_s to sigma_t, B(h)=e^-h - 1.

    m0 is the x0 estimate at sigma_s; `history` holds (lambda, x0) of earlier points, newest first.
    Order p = len(history) + 1 for the predictor; the corrector adds the point t itself.
    Data-prediction form of UniPC (Zhao et al. 2023, Alg. 2 with B(h) = "bh2"), as in Wan2.1's
    `FlowUniPCMultistepScheduler` (alpha = 1 - sigma).
    """
    lam_s, lam_t = _log_snr(sigma_s), _log_snr(sigma_t)
    alpha_t = 1.0 - sigma_t
    h = lam_t - lam_s
    hh = -h
    h_phi_1 = math.expm1(hh)  # e^{-h} - 1
    b_h = math.expm1(hh)  # B(h) of "bh2" (equal to h_phi_1; "bh1" would use hh)
    order = len(history) + 1

    rks = [(lam_k - lam_s) / h for lam_k, _ in history]
    d1s = [(m_k - m0) / rk for rk, (_, m_k) in zip(rks, history)]
    rks.append(1.0)
    # b_i = i! * h_phi_k / B(h), h_phi_k following the phi-function recurrence of UniPC
    b, h_phi_k, fact = [], h_phi_1 / hh - 1.0, 1
    for i in range(1, order + 1):
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    r = torch.tensor([[rk ** k for rk in rks] for k in range(order)], dtype=torch.float64)
    b = torch.tensor(b, dtype=torch.float64)

    x_t = (sigma_t / sigma_s) * x - (alpha_t * h_phi_1) * m0
    if m_t is None:  # predictor UniP-p
        if order == 1:
            return x_t
        rhos = [0.5] if order == 2 else torch.linalg.solve(r[:-1, :-1], b[:-1]).tolist()
        res = sum(rho * d for rho, d in zip(rhos, d1s))
    else:  # corrector UniC-p, uses the model output at the predicted point
        rhos = [0.5] if order == 1 else torch.linalg.solve(r, b).tolist()
        res = sum((rho * d for rho, d in zip(rhos[:-1], d1s)), torch.zeros_like(m0))
        res = res + rhos[-1] * (m_t - m0)
    return x_t - (alpha_t * b_h) * res


@torch.no_grad()
def sample_uni_pc(
    fn: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    order: int = 2,
    callback: Callback | None = None,
    should_stop: StopCheck | None = None,
) -> torch.Tensor:
    """UniPC multistep predictor-corrector for flow matching (Wan2.1's default solver, bh2).

    One model call per step. Step i: x0_i = x - sigma_i * v; the corrector UniC refines the sample
    at sigma_i using x0_i (no extra call); then the predictor UniP steps to sigma_{i+1} from the
    last `p` x0 estimates, p = min(order, i + 1, steps - i) (warm-up and lower order at the end,
    as Wan's `lower_order_final`). A point at sigma = 1 has log-SNR -inf: it carries no weight in
    the extrapolation (the limit of the formulas) and is left out of the history, so FantasyTalking's
    schedule, which starts at exactly 1 (Wan's starts at 0.999), runs the next step at lower order.
    Callback and should_stop as in `sample_euler`.
    """
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 3:
        raise ValueError(f"order must be 1, 2 or 3, got {order!r} (2 is Wan's default)")
    s = _check_schedule(sigmas)
    n = len(s) - 1
    hist: list[tuple[float, torch.Tensor]] = []  # (lambda, x0) of the last steps, newest first
    x_prev: torch.Tensor | None = None  # sample before the last predictor step
    p_prev = 0
    for i in range(n):
        _step_begin(i, n, should_stop)
        v = fn(x, sigmas[i])
        m = x - s[i] * v
        if x_prev is not None:  # UniC on the last predictor step, now with m
            x = _uni_pc_update(x_prev, s[i - 1], s[i], hist[0][1], _finite(hist[1:p_prev]), m_t=m)
        hist = [(_log_snr(s[i]), m)] + hist[: order - 1]
        p = min(order, i + 1, n - i)
        x_prev = x
        x = _uni_pc_update(x, s[i], s[i + 1], m, _finite(hist[1:p]))
        p_prev = p
        if callback is not None:
            callback(i, n, x, m)
    return x


def _finite(points: list[tuple[float, torch.Tensor]]) -> list[tuple[float, torch.Tensor]]:
    """Drop history points at sigma = 1 (lambda = -inf); see sample_uni_pc."""
    return [pt for pt in points if math.isfinite(pt[0])]


# name -> solver; "euler" (first) is the official FantasyTalking sampler (`infer.py`: DiffSynth's
# FlowMatchScheduler), "uni_pc" Wan2.1's own default. The names are ComfyUI's sampler names, so a
# node and the command line say the same; "unipc" is the old spelling, still read (`solver_name`).
SOLVERS: dict[str, Callable[..., torch.Tensor]] = {"euler": sample_euler, "uni_pc": sample_uni_pc}
OLD_SOLVER_NAMES = {"unipc": "uni_pc"}


def solver_name(name: str) -> str:
    """The canonical solver name (an old spelling maps to its new one); unknown names are an error."""
    name = OLD_SOLVER_NAMES.get(name, name)
    if name not in SOLVERS:
        raise ValueError(f"solver must be one of {tuple(SOLVERS)}, got {name!r}")
    return name


# ----------------------------------------------------------------------------- guidance


@dataclass(frozen=True)
class AudioGuidanceSchedule:
    """Audio guidance scale over the steps: `cfg_audio` on the active window, 1 (off) elsewhere.

    Step i of `total` is active when `start <= i / total < end` (start inclusive, end exclusive),
    so end=1.0 covers every step and (start, end) = (0, 0.1) the first 10% (steps 0-2 of 30).
    """

    cfg_audio: float
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.cfg_audio):
            raise ValueError(f"cfg_audio must be finite, got {self.cfg_audio!r}")
        if not (0.0 <= self.start <= self.end <= 1.0):
            raise ValueError(
                f"need 0 <= start <= end <= 1 (fractions of the steps), got start={self.start}, end={self.end}"
            )

    def active(self, step: int, total: int) -> bool:
        if total < 1 or not 0 <= step < total:
            raise ValueError(f"step must be in [0, total) with total >= 1, got step={step}, total={total}")
        return self.start <= step / total < self.end

    def value(self, step: int, total: int) -> float:
        return float(self.cfg_audio) if self.active(step, total) else 1.0


@dataclass(frozen=True)
class Guidance:
    """Separate text and audio guidance, as the official FantasyTalking loop combines them.

    With a = audio scale at this step (`cfg_audio` inside the audio window, 1 outside; see
    AudioGuidanceSchedule) and t = cfg_text, the official rule (`diffsynth/pipelines/wan_video.py`)
    at every step and every a, including a == 1:
    - t != 1: neg_noaudio + t*(pos_noaudio - neg_noaudio) + a*(pos_audio - pos_noaudio)  (3 passes)
    - t == 1: pos_noaudio + a*(pos_audio - pos_noaudio)                                  (2 passes)
      (at a == 1 this is pos_audio, computed with one pass)
    `two_pass_shortcut` (not official; e.g. for step-distilled LoRAs trained without audio CFG):
    where a == 1 and t != 1, run two passes instead, neg_audio + t*(pos_audio - neg_audio), which
    is a different value (the negative pass keeps its audio). Defaults are the official `infer.py`
    values: cfg_text 5, cfg_audio 5 (the paper reports 4.5).
    """

    cfg_text: float = 5.0
    cfg_audio: float = 5.0
    audio_start: float = 0.0
    audio_end: float = 1.0
    two_pass_shortcut: bool = False

    def __post_init__(self) -> None:
        if not math.isfinite(self.cfg_text):
            raise ValueError(f"cfg_text must be finite, got {self.cfg_text!r}")
        _ = self.audio_schedule  # validates the audio fields

    @property
    def audio_schedule(self) -> AudioGuidanceSchedule:
        return AudioGuidanceSchedule(self.cfg_audio, self.audio_start, self.audio_end)

    def passes(self, step: int, total: int) -> tuple[str, ...]:
        """Names of the model passes needed at this step, "pos_audio" first."""
        audio_on = self.audio_schedule.value(step, total) != 1.0
        if self.cfg_text != 1.0:
            if not audio_on and self.two_pass_shortcut:
                return ("pos_audio", "neg_audio")
            return ("pos_audio", "pos_noaudio", "neg_noaudio")
        return ("pos_audio", "pos_noaudio") if audio_on else ("pos_audio",)

    def combine(self, outputs: Mapping[str, torch.Tensor], step: int, total: int) -> torch.Tensor:
        """Guided prediction from the outputs of `passes(step, total)`."""
        need = self.passes(step, total)
        missing = [k for k in need if k not in outputs]
        if missing:
            raise KeyError(f"guidance at step {step}/{total} needs passes {need}; missing {missing}")
        t, a = self.cfg_text, self.audio_schedule.value(step, total)
        o = outputs
        if len(need) == 3:
            return (o["neg_noaudio"] + t * (o["pos_noaudio"] - o["neg_noaudio"])
                    + a * (o["pos_audio"] - o["pos_noaudio"]))
        if "neg_audio" in need:
            return o["neg_audio"] + t * (o["pos_audio"] - o["neg_audio"])
        if "pos_noaudio" in need:
            return o["pos_noaudio"] + a * (o["pos_audio"] - o["pos_noaudio"])
        return o["pos_audio"]


def step_index(sigma: torch.Tensor | float, sigmas: torch.Tensor) -> int:
    """Index i of the schedule step that `sigma` belongs to: sigmas[i] >= sigma > sigmas[i+1].

    Exact for the solvers' own calls at sigmas[i]; a call between two entries (e.g. a Heun
    midpoint) belongs to the step it started from. Like core ComfyUI's `sample_sigmas` lookup.
    """
    s = float(sigma.reshape(-1)[0]) if isinstance(sigma, torch.Tensor) else float(sigma)
    inner = sigmas[1:-1].double()
    return int((inner >= s - 1e-6).sum())


def guided_model(
    denoise_passes: Callable[[torch.Tensor, torch.Tensor, tuple[str, ...]], Mapping[str, torch.Tensor]],
    guidance: Guidance,
    sigmas: torch.Tensor,
) -> Model:
    """Turn `denoise_passes(x, sigma, passes) -> {pass: v}` into a guided `fn(x, sigma) -> v`.

    The step index, which the audio window needs, comes from where sigma sits in `sigmas` (the
    schedule the solver runs; see `step_index`), not from a call counter, so solvers that call
    the model more than once per step still get the right window.
    """
    _check_schedule(sigmas)
    total = sigmas.numel() - 1
    sched = sigmas.detach().cpu()

    def fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        i = step_index(sigma, sched)
        return guidance.combine(denoise_passes(x, sigma, guidance.passes(i, total)), i, total)

    return fn


def run_passes_batched(
    model_fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigma: torch.Tensor | float,
    passes: Sequence[str],
    cond_for_pass: Mapping[str, Mapping[str, Any]] | Callable[[str], Mapping[str, Any]],
    max_batch: int | None = None,
) -> dict[str, torch.Tensor]:
    """Run several guidance passes as one batched call `model_fn(x, sigma, **cond)`.

    x: [B, ...]; each pass's conditioning is a dict whose tensors have leading dim B (they are
    concatenated pass after pass) and whose other values must be equal in every pass (passed
    once). model_fn gets x [P*B, ...] and sigma [P*B]
    and returns [P*B, ...]; with `max_batch` it is called on chunks of at most that many rows.
    Returns {pass: output [B, ...]}.
    """
    if not passes:
        raise ValueError("passes is empty; give at least one pass name such as 'pos_audio'")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1 or None, got {max_batch}")
    get = cond_for_pass if callable(cond_for_pass) else cond_for_pass.__getitem__
    conds = [dict(get(p)) for p in passes]
    bsz, n = x.shape[0], len(passes)
    keys = set(conds[0])
    for p, c in zip(passes, conds):
        if set(c) != keys:
            raise ValueError(f"conditioning keys differ between passes: {passes[0]} has {sorted(keys)}, {p} has {sorted(c)}")
    batched, constant = {}, {}
    for k in sorted(keys):
        vals = [c[k] for c in conds]
        if isinstance(vals[0], torch.Tensor):
            for p, v in zip(passes, vals):
                if not isinstance(v, torch.Tensor) or v.ndim == 0 or v.shape[0] != bsz:
                    raise ValueError(
                        f"conditioning {k!r} of pass {p!r} must be a tensor with leading dim {bsz} (x's batch), "
                        f"got {getattr(v, 'shape', type(v))}; repeat a tensor every row shares to the batch"
                    )
            batched[k] = torch.cat(vals)
        else:
            if any(not _same(vals[0], v) for v in vals[1:]):
                raise ValueError(
                    f"conditioning {k!r} is not a tensor and differs between passes {tuple(passes)}; "
                    "make it a per-row tensor so it can be batched"
                )
            constant[k] = vals[0]

    sig = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
    sig = sig.expand(bsz) if sig.numel() == 1 else sig
    if sig.shape != (bsz,):
        raise ValueError(f"sigma must be a scalar or have shape [{bsz}], got {tuple(sig.shape)}")
    xs, sigs = torch.cat([x] * n), torch.cat([sig] * n)  # [P*B, ...], [P*B]
    rows, step = n * bsz, max_batch or n * bsz
    outs = []
    for a in range(0, rows, step):
        part = {k: v[a:a + step] for k, v in batched.items()}
        outs.append(model_fn(xs[a:a + step], sigs[a:a + step], **part, **constant))
    out = torch.cat(outs)
    if out.shape[0] != rows:
        raise ValueError(f"model_fn returned {out.shape[0]} rows for {rows} inputs")
    return dict(zip(passes, out.split(bsz)))


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return bool(a == b)


def inpainting(fn: Model, source: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor) -> Model:
    """Flow-matching inpainting by latent blending, as core ComfyUI's `KSamplerX0Inpaint` does for flow
    models: `mask` (broadcast to x) is 1 where the model generates and 0 where the sample is held to
    `source`. Before each call the held region of x is replaced by the source noised to the current
    sigma with the run's own `noise`, x = (1 - sigma) * source + sigma * noise, and the clean estimate
    there by the source itself; the velocity returned is taken against the solver's own x. So outside
    the mask Euler and UniPC stay exactly on the source's noising path and end on the source at sigma
    0; inside, the model generates as usual (its velocity is returned unchanged there)."""
    keep = 1.0 - mask

    def wrapped(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = float(sigma.reshape(-1)[0]) if isinstance(sigma, torch.Tensor) else float(sigma)
        if s <= 0:
            raise ValueError(f"inpainting needs sigma > 0 at every model call, got {s}")
        blended = x * mask + ((1 - s) * source + s * noise) * keep
        x0 = (blended - s * fn(blended, sigma)) * mask + source * keep
        return (x - x0) / s

    return wrapped


def composite(generated: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``generated`` where ``mask`` is 1, ``source`` where it is 0, blended between (``mask``
    broadcasts). The one compositing of a dub: the sampled latents after `inpainting` (so outside the
    mask the result is the source exactly, not up to rounding) and the output frames (paste-back)."""
    return generated * mask + source * (1 - mask)


# ----------------------------------------------------------------------------- noise


def initial_noise(
    shape: Sequence[int],
    seed: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise drawn on the CPU with `torch.Generator().manual_seed(seed)`, then moved.

    Drawing on the CPU makes the start identical on every device (the official pipeline's
    `rand_device="cpu"` default); e.g. latent noise is [1, 16, (F-1)//4 + 1, H/8, W/8].
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(tuple(shape), generator=g, dtype=torch.float32, device="cpu")
    return noise.to(device=device, dtype=dtype)
