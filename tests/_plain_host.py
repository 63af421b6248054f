"""A plain host for the node layer on our own Wan DiT: what the nodes use of ComfyUI's ModelPatcher
and samplers, so node graphs run in the tests without ComfyUI.

- :class:`PlainModelPatcher`: object patches (attribute paths, applied for a sampling run and
  restored), DIFFUSION_MODEL wrappers kept apart and merged at sampling as core does, additional
  models, ``get_model_object``.
- :class:`PlainGuider`: FantasyTalking's guidance with the core's own pieces
  (``sampling.guided_model`` over ``sampling.run_passes_batched``): the passes run as one batched
  DiT call with the per-row cond ``uuids`` core puts in ``transformer_options``.
- a LATENT's ``noise_mask`` inpaints as core's samplers do for flow models (`sampling.inpainting`).
- :func:`install` swaps these in for the host side of nodes/sampling.py (``make_guider``,
  ``with_shift``, ``sample``).
"""

from __future__ import annotations

import copy
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

import nodes.sampling
from fantasytalking_core.adapters.attach import get_path, set_path
from fantasytalking_core.encoders import pad_context
from fantasytalking_core.sampling import (SOLVERS, Guidance, flow_sigmas, guided_model, initial_noise, inpainting,
                                          run_passes_batched)
from nodes import _host


class _PlainBase(nn.Module):
    def __init__(self, dit: nn.Module):
        super().__init__()
        self.diffusion_model = dit


class PlainModelPatcher:
    """What our nodes use of core's ModelPatcher, over our own Wan DiT."""

    def __init__(self, dit: nn.Module):
        self.model = _PlainBase(dit)
        self.object_patches: dict[str, Any] = {}
        self.model_options: dict[str, Any] = {"transformer_options": {}}
        self.wrappers: dict[str, dict[str, list]] = {}
        self.additional_models: dict[str, list] = {}

    def clone(self) -> "PlainModelPatcher":
        n = copy.copy(self)
        n.object_patches = dict(self.object_patches)
        n.model_options = copy.deepcopy({k: v for k, v in self.model_options.items() if k != "transformer_options"})
        n.model_options["transformer_options"] = dict(self.model_options.get("transformer_options", {}))
        n.wrappers = {t: {k: list(v) for k, v in d.items()} for t, d in self.wrappers.items()}
        n.additional_models = dict(self.additional_models)
        return n

    def sampling_options(self) -> dict:
        """transformer_options for a sampling run: the model's, with its wrappers merged in."""
        options = dict(self.model_options.get("transformer_options", {}))
        options["wrappers"] = {t: {k: list(v) for k, v in d.items()} for t, d in self.wrappers.items()}
        return options

    def add_object_patch(self, name: str, obj: Any) -> None:
        self.object_patches[name] = obj

    def get_model_object(self, name: str) -> Any:
        return self.object_patches[name] if name in self.object_patches else get_path(self.model, name)

    def add_wrapper_with_key(self, wrapper_type: str, key: str, fn: Callable) -> None:
        self.wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(fn)

    def get_wrappers(self, wrapper_type: str, key: str) -> list:
        return self.wrappers.get(wrapper_type, {}).get(key, [])

    def set_additional_models(self, key: str, models: list) -> None:
        self.additional_models[key] = models

    def get_additional_models_with_key(self, key: str) -> list:
        return self.additional_models.get(key, [])

    @contextmanager
    def patched(self) -> Iterator[nn.Module]:
        """Apply the object patches for the duration of a sampling run, then restore."""
        saved = {path: set_path(self.model, path, obj) for path, obj in self.object_patches.items()}
        try:
            yield self.model.diffusion_model
        finally:
            for path, obj in saved.items():
                set_path(self.model, path, obj)


class PlainExecutor:
    """Core's WrapperExecutor for one chain of wrappers around ``base``: ``class_obj`` is the object
    whose method they wrap (the guider, for OUTER_SAMPLE wrappers)."""

    def __init__(self, fns: list[Callable], base: Callable, class_obj: Any = None):
        self.fns, self.base, self.class_obj = fns, base, class_obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.fns:
            return self.base(*args, **kwargs)
        return self.fns[0](PlainExecutor(self.fns[1:], self.base, self.class_obj), *args, **kwargs)


def wrapped_call(options: dict, base: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call ``base`` through the DIFFUSION_MODEL wrappers, outermost first, as core's executor does."""
    fns = [f for fs in options.get("wrappers", {}).get(_host.DIFFUSION_MODEL, {}).values() for f in fs]

    def run(i: int, *a: Any, **kw: Any) -> Any:
        if i == len(fns):
            return base(*a, **kw)
        return fns[i](lambda *aa, **kk: run(i + 1, *aa, **kk), *a, **kw)

    return run(0, *args, **kwargs)


def forward(model: PlainModelPatcher, x, t, context, clip_fea, y, options: dict) -> torch.Tensor:
    """One DiT call the way core makes it: object patches applied, through the DIFFUSION_MODEL
    wrappers, with core's argument order (x, timestep, context, clip_fea, time_dim_concat, options)."""
    opts = model.sampling_options()
    opts.update(options)

    def base(x, timestep, context, clip_fea, time_dim_concat, transformer_options, y=None):
        return dit(x, timestep, context, clip_fea, y)

    with model.patched() as dit:
        return wrapped_call(opts, base, x, t, context, clip_fea, None, opts, y=y)


def plain_i2v(cond: dict, like: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """y (mask 4 ch + first-frame latent 16 ch) and clip tokens from a CONDITIONING entry, as core's WAN21 builds them."""
    image = cond.get("concat_latent_image")
    y = None
    if image is not None:
        mask = cond.get("concat_mask")
        mask = torch.zeros_like(image[:, :1]) if mask is None else 1.0 - mask
        mask = mask.expand(-1, 4, -1, -1, -1) if mask.shape[1] == 1 else mask
        y = torch.cat([mask, image], dim=1).to(like)
    clip = cond.get("clip_vision_output")
    return y, (None if clip is None else clip.penultimate_hidden_states.to(like))


class PlainGuider:
    """A GUIDER over a PlainModelPatcher: FantasyTalking's guidance, the passes batched in one DiT call.

    As core's CFGGuider: the conds are lists of dicts (a CONDITIONING entry's values, its ``context``
    and ``uuid``), each sampling run works on copies of them (``self.conds``) through the model's
    OUTER_SAMPLE wrappers (``executor.class_obj`` is the guider). ``model_options["test_context_windows"]``
    (a list of :class:`CoreLikeWindow` without anchors) runs each DiT call window by window, the
    latent and Wan's I2V input ``y`` cut by the window as core's context windows cut them, the
    overlaps averaged."""

    def __init__(self, model: PlainModelPatcher, guidance: Guidance):
        self.model_patcher, self.guidance = model, guidance
        self.original_conds: dict[str, list[dict]] = {}

    def set_conds(self, positive: list, negative: list) -> None:
        self.original_conds = {name: [dict(conditioning[0][1], context=conditioning[0][0], uuid=uuid.uuid4())]
                               for name, conditioning in nodes.sampling.pass_conds(positive, negative).items()}

    def sample(self, noise: torch.Tensor, latent_image: torch.Tensor, sampler_name: str, sigmas: torch.Tensor,
               seed: int | None = None, denoise_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.conds = {k: [c.copy() for c in v] for k, v in self.original_conds.items()}
        outer = [f for fs in self.model_patcher.wrappers.get(_host.OUTER_SAMPLE, {}).values() for f in fs]
        try:
            return PlainExecutor(outer, self.outer_sample, self)(noise, latent_image, sampler_name, sigmas, seed,
                                                                 denoise_mask)
        finally:
            del self.conds

    def outer_sample(self, noise: torch.Tensor, latent_image: torch.Tensor, sampler_name: str, sigmas: torch.Tensor,
                     seed: int | None = None, denoise_mask: torch.Tensor | None = None) -> torch.Tensor:
        if sampler_name not in SOLVERS:
            raise ValueError(f"the plain test host runs the samplers {sorted(SOLVERS)}, not {sampler_name!r}")
        mp = self.model_patcher
        param = next(mp.model.diffusion_model.parameters())
        x0 = latent_image.to(param.device, torch.float32)
        x = noise.to(x0) * sigmas[0] + x0 * (1 - sigmas[0]) if float(sigmas[0]) < 1 else noise.to(x0)
        conds = {name: items[0] for name, items in self.conds.items()}
        names = list(conds)
        length = max(c["context"].shape[1] for c in conds.values())
        off = {conds[p]["uuid"] for p in ("pos_noaudio", "neg_noaudio")}
        windows = mp.model_options.get("test_context_windows")

        def cond_for_pass(name: str) -> dict:
            c = conds[name]
            y, clip = plain_i2v(c, param)
            rows = x.shape[0]
            out = {"context": pad_context(c["context"], length).to(param).expand(rows, -1, -1),
                   "pass_id": torch.full((rows,), names.index(name))}
            if y is not None:
                out["y"] = y.expand(rows, *y.shape[1:])
            if clip is not None:
                out["clip_fea"] = clip.expand(rows, *clip.shape[1:])
            return out

        def model_fn(x, sigma, context, pass_id, y=None, clip_fea=None):
            options = {"sample_sigmas": sigmas, _host.AUDIO_OFF: off,
                       "uuids": [conds[names[int(i)]]["uuid"] for i in pass_id]}
            if not windows:
                return forward(mp, x.to(param.dtype), sigma * 1000, context, clip_fea, y, options).float()
            out, count = torch.zeros_like(x, dtype=torch.float32), torch.zeros(x.shape[2])
            for w in windows:
                part = forward(mp, w.get_tensor(x).to(param.dtype), sigma * 1000, context, clip_fea,
                               None if y is None else w.get_tensor(y), {**options, "context_window": w})
                out[:, :, w.index_list] += part.float()
                count[w.index_list] += 1
            return out / count.view(1, 1, -1, 1, 1).to(out)

        fn = guided_model(lambda x, sigma, passes: run_passes_batched(model_fn, x, sigma, passes, cond_for_pass),
                          self.guidance, sigmas)
        if denoise_mask is not None:  # core's KSamplerX0Inpaint: the mask brought to the latent by trilinear resizing
            mask = torch.nn.functional.interpolate(denoise_mask.float().reshape(1, 1, -1, *denoise_mask.shape[-2:]),
                                                   size=x0.shape[2:], mode="trilinear")
            fn = inpainting(fn, x0, mask.to(x0), noise.to(x0))
        with torch.no_grad():
            return SOLVERS[sampler_name](fn, x, sigmas.to(x.device))


def make_guider(model: PlainModelPatcher, positive: list, negative: list, guidance: Guidance) -> PlainGuider:
    guider = PlainGuider(model, guidance)
    guider.set_conds(positive, negative)
    return guider


def with_shift(model: PlainModelPatcher, shift: float) -> PlainModelPatcher:
    m = model.clone()
    m.model_options["fantasytalking_shift"] = shift
    return m


def sample(model: PlainModelPatcher, guider: PlainGuider, latent: dict, seed: int, steps: int, sampler_name: str,
           scheduler: str, denoise: float = 1.0, part: tuple[int, int] = (0, 1)) -> dict:
    if scheduler != "simple":
        raise ValueError(f"the plain test host runs the 'simple' schedule only, not {scheduler!r}")
    shift = model.model_options.get("fantasytalking_shift", 5.0)
    sigmas = flow_sigmas(steps, shift) if denoise >= 1.0 else flow_sigmas(int(steps / denoise), shift)[-(steps + 1):]
    noise = initial_noise(latent["samples"].shape, seed)
    return {"samples": guider.sample(noise, latent["samples"], sampler_name, sigmas, seed=seed,
                                     denoise_mask=latent.get("noise_mask")).cpu()}


def install(monkeypatch) -> None:
    """Run the sampling nodes on this host (pytest's monkeypatch undoes it after the test)."""
    for name, fn in (("make_guider", make_guider), ("with_shift", with_shift), ("sample", sample)):
        monkeypatch.setattr(nodes.sampling, name, fn)


class CoreLikeWindow:
    """A context window shaped like ComfyUI 0.33's IndexListContextWindow: ``index_list``, ``dim``,
    an optional ``causal_anchor_index`` (the frame before the window, put in front of it) and
    ``get_tensor(full, device, dim, retain_index_list)``; ``anchor=None`` behaves like 0.3.64's."""

    def __init__(self, index_list: list[int], dim: int = 2, anchor: int | None = None):
        self.index_list, self.dim, self.context_length = list(index_list), dim, len(index_list)
        if anchor is not None:
            self.causal_anchor_index = anchor

    def get_tensor(self, full: torch.Tensor, device=None, dim: int | None = None,
                   retain_index_list: list[int] = ()) -> torch.Tensor:
        dim = self.dim if dim is None else dim
        anchor = getattr(self, "causal_anchor_index", None)
        indices = ([anchor] if anchor is not None else []) + self.index_list
        window = full[(slice(None),) * dim + (indices,)]
        for i in retain_index_list:  # position i of the window keeps the full tensor's frame i
            window[(slice(None),) * dim + (i,)] = full[(slice(None),) * dim + (i,)]
        return window.to(device)
