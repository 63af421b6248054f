"""TeaCache-style step skipping: reuse the blocks' last residual when the input changed little.

See :class:`~fantasytalking_core.perf.options.StepCacheConfig` for the rule. The cache follows the
sampler from the timesteps it is called with: the same t again is the next call (slot) of the same
step, a smaller t the next step, a larger t a new sampling run (the cache resets). So guidance
passes batched into one call share one decision, and passes run one by one each keep their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .options import StepCacheConfig

Reduce = Callable[[torch.Tensor], torch.Tensor]  # sums a small tensor over the ranks (sequence parallel)


@dataclass
class _Slot:
    previous: torch.Tensor | None = None  # last indicator
    residual: torch.Tensor | None = None  # output - input of the blocks at the last computed step
    accumulated: float = 0.0
    consecutive: int = 0


class StepCache:
    """Decide per call whether the blocks run; keep the residual they produced."""

    def __init__(self, cfg: StepCacheConfig, reduce: Reduce | None = None):
        self.cfg = cfg
        self.reduce = reduce
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new sampling run); also done when t goes up."""
        self._slots: dict[int, _Slot] = {}
        self._last_t: float | None = None
        self.step = -1
        self.slot = 0
        self.computed = 0
        self.skipped = 0
        self.history: list[tuple[int, int, bool]] = []  # (step, slot, skipped)

    def begin(self, t: float) -> None:
        """Place a call with timestep ``t`` in the run: same step (next slot), next step, or a new run."""
        if self._last_t is None or t > self._last_t + 1e-6:
            self.reset()
            self.step = 0
        elif abs(t - self._last_t) <= 1e-6:
            self.slot += 1
            self._last_t = t
            return
        else:
            self.step += 1
        self.slot = 0
        self._last_t = t

    def skip(self, indicator: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
        """The residual to add instead of running the blocks, or None to run them.

        ``indicator`` is this call's indicator, ``like`` the blocks' input (its shape must match
        the stored residual's).
        """
        cfg, slot = self.cfg, self._slots.setdefault(self.slot, _Slot())
        previous, slot.previous = slot.previous, indicator.detach()
        skip = False
        if cfg.threshold > 0 and previous is not None and slot.residual is not None:
            if slot.residual.shape == like.shape and previous.shape == indicator.shape:
                slot.accumulated += _polyval(cfg.coefficients, self.relative_change(indicator, previous))
                skip = (slot.accumulated < cfg.threshold and self.step >= cfg.start_step
                        and (cfg.end_step is None or self.step < cfg.end_step)
                        and (cfg.max_consecutive is None or slot.consecutive < cfg.max_consecutive))
        self.history.append((self.step, self.slot, skip))
        if skip:
            slot.consecutive += 1
            self.skipped += 1
            return slot.residual
        slot.accumulated, slot.consecutive = 0.0, 0
        self.computed += 1
        return None

    def store(self, residual: torch.Tensor) -> None:
        """Keep the blocks' residual (output - input) of the call that just ran them."""
        if self.cfg.threshold > 0:
            self._slots.setdefault(self.slot, _Slot()).residual = residual.detach()

    def relative_change(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """``sum|a - b| / sum|b|``: the one value the step cache reads from the device, once per DiT call
        (not per block), since whether the blocks run at all is decided on the host."""
        sums = torch.stack([(a.float() - b.float()).abs().sum(), b.float().abs().sum()])
        if self.reduce is not None:
            sums = self.reduce(sums)
        num, den = sums.tolist()
        return num / den if den > 0 else float("inf")


def _polyval(coefficients: tuple[float, ...], x: float) -> float:
    out = 0.0
    for c in coefficients:
        out = out * x + c
    return out
