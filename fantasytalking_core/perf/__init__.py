"""Speed and memory options for the Wan DiT: one config, one call.

    from fantasytalking_core.perf import RuntimeOptions, configure
    rt = configure(dit, RuntimeOptions(attention="auto", fast_rope=True, fp8="e4m3fn", block_swap=20))
    v = rt(x, t, context, clip_fea, y)   # dit's forward with the options; dit(...) stays the plain one

Modules: ``options`` (RuntimeOptions, StepCacheConfig), ``runtime`` (configure; Runtime, the forward
with the options), ``flops`` (FLOPs from the config), ``fp8``, ``blockswap``, ``stepcache``,
``parallel`` (Ulysses sequence parallel).
"""

from .flops import TokenGrid, forward_flops, step_flops
from .options import RuntimeOptions, StepCacheConfig
from .runtime import Runtime, configure, configured, configured_runtime, find_attachment, unconfigure

__all__ = ["Runtime", "RuntimeOptions", "StepCacheConfig", "TokenGrid", "configure", "configured",
           "configured_runtime", "find_attachment", "forward_flops", "step_flops", "unconfigure"]
