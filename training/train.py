"""The two-stage trainer: `torchrun --nproc_per_node N -m training.train --config CONFIG.yaml`.

The loop (`train`), top to bottom:
1. join the process group (torchrun, or a one-process group for a plain `python -m`), read the
   dataset, build the DiT + adapters, pick the trainable set, wrap blocks for gradient
   checkpointing, shard with FSDP2, AdamW with linear warm-up;
2. resume from the run's latest complete checkpoint (weights, optimizer, scheduler, RNG and the
   data position `samples_seen`);
3. per optimizer step: the stage of that step (stage 1: global audio attention, plain loss; stage 2:
   frame-level audio, lip-masked loss when p > eta); per micro-step: the batch's flow-matching
   input with image/audio/prompt dropped per sample, forward under autocast, loss, backward;
   piece, step; log the rank-averaged loss; checkpoint every `checkpoint.every` steps;
4. at the end, export the trainable weights to the files the nodes load.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from fantasytalking_core.segments import i2v_y

from . import checkpointing, distributed
from .config import StageConfig, TrainConfig
from .dataset import PieceDataset, PositionPlan, make_loader
from .export import gather_trainable, write_exports
from .losses import noisy_latents, sample_losses
from .metrics import MetricsLog
from .model import build_model, checkpoint_blocks, materialize, shard, wan_config



def make_inputs(batch: dict, stage: StageConfig, eta: float, device: torch.device) -> tuple[dict, ...]:
    """A collated batch -> (model kwargs, target, lip mask, use-mask flags), dropout applied per sample.

    Dropped image: CLIP tokens and the first-frame latent zeroed, identity attention off. Dropped
    audio: audio attention off (as inference's no-audio guidance pass). Dropped prompt: the empty
    prompt's embedding.
    """
    b = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    x0 = b["latents"]  # [B, 16, T_lat, H, W]
    x_t, target = noisy_latents(x0, b["noise"], b["sigma"])
    keep_image = b["keep_image"]
    y = i2v_y(b["first_latent"] * keep_image.view(-1, 1, 1, 1, 1), known=1)  # [B, 20, T_lat, H, W]
    context = torch.where(b["keep_prompt"].view(-1, 1, 1) > 0, b["text"], b["null_text"])
    inputs = dict(x_t=x_t, timestep=b["sigma"] * 1000.0, context=context,
                  clip_fea=b["clip_fea"] * keep_image.view(-1, 1, 1), y=y, audio_features=b["audio"],
                  face_embedding=b["face_embedding"], omegas=b["omegas"], keep_audio=b["keep_audio"],
                  keep_image=keep_image)
    use_mask = (b["p"] > eta) if stage.lip_mask_loss else torch.zeros_like(b["p"], dtype=torch.bool)
    return inputs, target, b["lip_mask"], use_mask


def check_compatible(info: dict, cfg: TrainConfig) -> None:
    wcfg = wan_config(cfg.model)
    for key, want in (("text_dim", wcfg.text_dim), ("clip_dim", wcfg.clip_dim), ("audio_dim", 768)):
        if info.get(key) != want:
            raise ValueError(f"dataset {cfg.data.dataset} has {key} {info.get(key)} but the model takes {want}: prepare "
                             f"it with the encoders of this model (--preset tiny for the tiny model)")
    if str(info.get("face_embedding", "")).startswith("fallback"):
        warnings.warn(f"dataset {cfg.data.dataset} holds fallback face embeddings ({info['face_embedding']}), not "
                      "ArcFace: the identity adapter will not work with real ArcFace embeddings", stacklevel=2)


def _check_resume_config(run_dir: Path, cfg: TrainConfig) -> None:
    saved = TrainConfig.load(run_dir / "config.yaml")
    for name in ("model", "seed"):
        if getattr(saved, name) != getattr(cfg, name):
            raise ValueError(f"{run_dir} was trained with another {name} ({getattr(saved, name)}); resume with the same "
                             f"one, or start a new run (another run_dir, or --resume never)")


def lr_lambda(warmup: int) -> Callable[[int], float]:
    return lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def train(cfg: TrainConfig, resume: str = "auto", max_steps: int | None = None) -> dict:
    """Run (or continue) training; returns a summary. `resume`: "auto" (the run's latest complete
    checkpoint, if any), "never", or a checkpoint folder. `max_steps` stops early, with a checkpoint."""
    run_dir = Path(cfg.run_dir).expanduser()
    with distributed.session(cfg.device) as ctx, warnings.catch_warnings():
        # FSDP warns that the audio attention returns a view; attach.py only uses it out of place
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPAudioAttention\) returned a view")
        dataset = PieceDataset(cfg.data.dataset, cfg.seed, cfg.loss)
        check_compatible(dataset.info, cfg)
        ckpt_dir = run_dir / "checkpoints"
        resume_from = None if resume == "never" else checkpointing.latest(ckpt_dir) if resume == "auto" else Path(resume)
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if resume_from is not None and (run_dir / "config.yaml").is_file():
                _check_resume_config(run_dir, cfg)
            cfg.save(run_dir / "config.yaml")
            shutil.copyfile(dataset.layout.info, run_dir / "dataset.json")
        ctx.barrier()

        model = build_model(cfg.model)
        meta = cfg.model.wan != "tiny"
        # the adapters' initial values: sharding copies them, materialize() puts them back after to_empty()
        cpu_init = {n: p.detach() for n, p in model.named_parameters() if not p.is_meta} if meta else {}
        if cfg.model.gradient_checkpointing:
            checkpoint_blocks(model)
        shard(model, ctx.mesh, cfg.model.precision)
        if meta:
            materialize(model, cfg.model, ctx.device, cpu_init)
            del cpu_init
        params = [p for p in model.parameters() if p.requires_grad]
        o = cfg.optim
        optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, eps=o.eps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(o.warmup_steps))
        checkpointer = checkpointing.Checkpointer(ckpt_dir, ctx, cfg.checkpoint.keep_last)
        state = {"samples_seen": 0}
        step = 0
        if resume_from is not None:
            state = checkpointer.load(resume_from, model, optimizer, scheduler)
            step = state["step"]
        metrics = MetricsLog(run_dir, ctx.is_main, cfg.log.every, cfg.log.tensorboard)
        metrics.truncate(step)
        if ctx.is_main:
            n_train = sum(p.numel() for p in params)  # a sharded parameter's numel is its full size
            print(f"training {cfg.model.trainable} ({n_train / 1e6:.1f}M trainable parameters), {len(dataset)} pieces, "
                  f"{ctx.world_size} rank(s) on {ctx.device.type}, from step {step} of {cfg.total_steps}"
                  + (f" ({resume_from.name})" if resume_from else "") + (f"; {metrics.note}" if metrics.note else ""),
                  flush=True)

        plan = PositionPlan(cfg.seed, len(dataset), ctx.world_size, ctx.rank, cfg.data.batch_size, o.grad_accum,
                            start=state["samples_seen"])
        batches = make_loader(dataset, plan, cfg.data.num_workers)
        autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=cfg.model.precision == "bf16")
        end = cfg.total_steps if max_steps is None else min(cfg.total_steps, max_steps)
        started, first_step = time.perf_counter(), step
        while step < end:
            _, stage = cfg.stage_at(step)
            t0 = time.perf_counter()
            loss_sum, masked, rows = 0.0, 0, 0
            for micro in range(o.grad_accum):
                batch = next(batches)
                inputs, target, lip_mask, use_mask = make_inputs(batch, stage, cfg.loss.eta, ctx.device)
                model.set_requires_gradient_sync(micro == o.grad_accum - 1)
                with autocast:
                    pred = model(**inputs, audio_mode=stage.audio)
                loss = sample_losses(pred, target, lip_mask, use_mask).mean()
                (loss / o.grad_accum).backward()
                loss_sum += loss.item() / o.grad_accum
                masked, rows = masked + int(use_mask.sum()), rows + use_mask.numel()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, o.grad_clip if o.grad_clip > 0 else math.inf)
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            state["samples_seen"] += plan.samples_per_step
            metrics.log(step, {"stage": stage.name, "loss": ctx.mean(loss_sum), "lr": scheduler.get_last_lr()[0],
                               "grad_norm": float(grad_norm), "masked_frac": ctx.mean(masked / rows),
                               "sec": time.perf_counter() - t0})
            if step % cfg.checkpoint.every == 0 or step == end:
                checkpointer.save(step, model, optimizer, scheduler, state)
        elapsed = time.perf_counter() - started
        exported: list[str] = []
        if step >= cfg.total_steps:
            full = gather_trainable(model)
            if ctx.is_main:
                exported = [str(p) for p in write_exports(full, cfg, dataset.info, run_dir / "export", step)]
        metrics.close()
        summary = {"step": step, "steps_run": step - first_step, "seconds": elapsed,
                   "steps_per_s": (step - first_step) / elapsed if elapsed > 0 else 0.0, "exported": exported,
                   "world_size": ctx.world_size}
        if ctx.is_main:
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
            print(f"done: step {step}, {summary['steps_per_s']:.2f} steps/s" +
                  (f", exported {', '.join(exported)}" if exported else ""), flush=True)
        return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="YAML config (training/configs/tiny.yaml, paper.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set data.dataset=/data/ft --set optim.lr=2e-4 (repeatable)")
    ap.add_argument("--run-dir", help="shorthand for --set run_dir=DIR")
    ap.add_argument("--resume", default="auto", help="auto (latest checkpoint of the run, if any), never, or a "
                                                     "checkpoint folder")
    ap.add_argument("--max-steps", type=int, help="stop after this step (with a checkpoint), e.g. to fit a time slot")
    args = ap.parse_args(argv)
    overrides = args.set + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
    try:
        cfg = TrainConfig.load(args.config, overrides)
        train(cfg, resume=args.resume, max_steps=args.max_steps)
    except (FileNotFoundError, FileExistsError, ValueError) as err:  # bad input: the message says what to do
        raise SystemExit(f"error: {err}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
