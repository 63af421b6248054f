"""The smoke workflows about model state: prompt after prompt in one ComfyUI session, and GGUF files.

``prompt_order_<loader>``: plain KSampler, FantasyTalking, a LoRA, LoRA -> Apply and Apply -> LoRA,
one prompt after another in several orders, each result compared bit for bit with a fresh run
(issue 14, item 10: a LoRA run after plain and FantasyTalking runs once lost its LoRA on the
modules Apply patches). ``pack_gguf``: city96's UnetLoaderGGUF against core's UNETLoader.
"""

from __future__ import annotations

from scripts.comfy_host import SmokeFailure
from scripts.comfy_smoke_workflows import (COMMON, FT_NEEDS, Context, Workflow, apply_node, ft_base, ft_sampler, latent,
                                           max_diff, save_latent)
from scripts.comfy_tiny_models import MODEL_FILES, gguf_names

LOADERS = ("unet", "gguf_BF16", "gguf_Q8_0", "gguf_Q4_0")


def _loader(ctx: Context, loader: str, name_suffix: str = "") -> dict:
    """The DiT loader node: core's UNETLoader, or city96's UnetLoaderGGUF on a GGUF file."""
    if loader == "unet":
        name = ctx.models["wan_dit"]
        return {"class_type": "UNETLoader", "inputs": {"unet_name": suffixed(name, name_suffix), "weight_dtype": "default"}}
    name = gguf_names(ctx.models["wan_dit"])[loader.split("_", 1)[1]]
    return {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": suffixed(name, name_suffix)}}


def suffixed(name: str, suffix: str) -> str:
    stem, _, ext = name.rpartition(".")
    return f"{stem}{suffix}.{ext}" if suffix else name


CONFIGS = ("plain", "ft", "lora", "lora_apply", "apply_lora")
# (seed, order): a seed per order, so every prompt is a computation ComfyUI has not cached before
ORDERS = ((7, ("plain", "ft", "lora", "lora_apply", "apply_lora")),  # the order, then LoRA with Apply
          (8, ("apply_lora", "lora_apply", "lora", "ft", "plain")),
          (9, ("ft", "lora", "plain", "apply_lora", "lora_apply")))


def fresh_suffixes() -> list[str]:
    """File-name suffixes of the fresh runs: one untouched model object per configuration and seed."""
    return [f"_fresh_{config}_{seed}" for seed, _ in ORDERS for config in CONFIGS]


def config_graph(ctx: Context, loader: str, config: str, seed: int, tag: str, name_suffix: str = "") -> dict:
    """The inputs plus one sampler: plain KSampler, FantasyTalking (Apply -> our sampler, cfg 5/5),
    a LoRA with KSampler, LoRA -> Apply, Apply -> LoRA."""
    g = ft_base(ctx)
    g["7"] = _loader(ctx, loader, name_suffix)
    lora = {"lora_name": MODEL_FILES["lora"][1], "strength_model": 1.0}
    model = ["7", 0]
    if config in ("lora", "lora_apply"):
        g["70"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, **lora}}
        model = ["70", 0]
    if config in ("ft", "lora_apply", "apply_lora"):
        g["71"] = apply_node(model)
        model = ["71", 0]
    if config == "apply_lora":
        g["72"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, **lora}}
        model = ["72", 0]
    g["80"] = (ft_sampler(model, 5.0, 5.0, shift=5.0) if config not in ("plain", "lora")
               else {"class_type": "KSampler", "inputs": {"model": model, "cfg": 5.0, **COMMON}})
    g["80"]["inputs"]["seed"] = seed
    g["90"] = save_latent("80", f"{tag}_{config}")
    return g


def prompt_order(loader: str) -> Workflow:
    """In one server session, the configurations one prompt after another in several orders, each
    result compared bit for bit with a fresh run (a model object no prompt touched before: the
    same file under a name ComfyUI has not loaded)."""

    def run(ctx: Context) -> str:
        orders = ORDERS if loader == "unet" else ORDERS[:2]
        seen = {}
        for i, (seed, order) in enumerate(orders):
            for config in order:
                out = ctx.prompt(config_graph(ctx, loader, config, seed, f"order_{loader}_{i}"))
                seen[config, seed] = latent(ctx, out, "90")
        fresh = {}
        for config, seed in seen:
            out = ctx.prompt(config_graph(ctx, loader, config, seed, f"fresh_{loader}", f"_fresh_{config}_{seed}"))
            fresh[config, seed] = latent(ctx, out, "90")
        bad = [f"{c} (seed {s}) differs from a fresh run by {max_diff(x, fresh[c, s]):.3g}"
               for (c, s), x in seen.items() if max_diff(x, fresh[c, s]) != 0]
        f = {c: fresh[c, orders[0][0]] for c in CONFIGS}
        effects = {"LoRA": max_diff(f["lora"], f["plain"]), "FantasyTalking": max_diff(f["ft"], f["plain"]),
                   "LoRA with Apply": max_diff(f["lora_apply"], f["ft"])}
        bad += [f"{name} changes nothing (max diff {d:.2g})" for name, d in effects.items() if d < 1e-3]
        if max_diff(f["lora_apply"], f["apply_lora"]) > 1e-5:
            bad.append(f"LoRA -> Apply and Apply -> LoRA differ by {max_diff(f['lora_apply'], f['apply_lora']):.3g}")
        if bad:
            raise SmokeFailure("; ".join(bad))
        return (f"{len(seen)} prompts in {len(orders)} orders, each bit-equal to a fresh run; effects: "
                + ", ".join(f"{k} {v:.2f}" for k, v in effects.items()))

    return Workflow(f"prompt_order_{loader}", run=run, needs=FT_NEEDS + ("lora",), gguf=loader != "unet")


def build_gguf(ctx: Context) -> dict:
    """Plain KSampler and FantasyTalking (cfg 5/5) on UNETLoader and on the three GGUF files."""
    g = ft_base(ctx)
    for n, loader in enumerate(LOADERS):
        g[f"7{n}"] = _loader(ctx, loader)
        g[f"71{n}"] = apply_node([f"7{n}", 0])
        g[f"80{n}"] = {"class_type": "KSampler", "inputs": {"model": [f"7{n}", 0], "cfg": 5.0, **COMMON}}
        g[f"81{n}"] = ft_sampler([f"71{n}", 0], 5.0, 5.0, shift=5.0)
        g[f"90{n}"], g[f"91{n}"] = save_latent(f"80{n}", f"gguf_plain_{loader}"), save_latent(f"81{n}", f"gguf_ft_{loader}")
    del g["7"]
    return g


def check_gguf(ctx: Context, outputs: dict) -> str:
    plain = {loader: latent(ctx, outputs, f"90{n}") for n, loader in enumerate(LOADERS)}
    ft = {loader: latent(ctx, outputs, f"91{n}") for n, loader in enumerate(LOADERS)}
    audio = max_diff(ft["unet"], plain["unet"])
    problems, details = [], []
    for loader in LOADERS[1:]:
        d_ft, d_plain, a = max_diff(ft[loader], ft["unet"]), max_diff(plain[loader], plain["unet"]), max_diff(ft[loader], plain[loader])
        if loader == "gguf_BF16" and d_ft + d_plain != 0:
            problems.append(f"BF16 GGUF differs from UNETLoader by {d_ft:.3g} (FantasyTalking), {d_plain:.3g} (plain)")
        if d_ft > 2 * d_plain + 1e-4:
            problems.append(f"{loader}: FantasyTalking moves {d_ft:.3g} from UNETLoader, quantisation alone {d_plain:.3g}")
        if a < 0.5 * audio:
            problems.append(f"{loader}: the audio moves the latent by {a:.3g}, on UNETLoader by {audio:.3g}")
        details.append(f"{loader[5:]} {d_ft:.1e} from UNETLoader (plain {d_plain:.1e}), audio effect {a:.2f}")
    if problems:
        raise SmokeFailure("; ".join(problems))
    return f"audio effect on UNETLoader {audio:.2f}; " + "; ".join(details)


WORKFLOWS: list[Workflow] = [
    *(prompt_order(loader) for loader in LOADERS),
    Workflow("pack_gguf", build_gguf, check_gguf, needs=FT_NEEDS, gguf=True),
]
