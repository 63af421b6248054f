"""Our pipeline against the official FantasyTalking inference, on the CPU, with tiny random weights.

    python -m scripts.official_parity --official /path/to/fantasy-talking [--steps 5] [--json out.json]

``--official`` is a local copy of https://github.com/Fantasy-AMAP/fantasy-talking (its code is
imported from there and never copied here: the check runs again from that folder, whose modules
come first as they do for its infer.py, scripts/comfy_host.py ``continue_from``). Both sides get the same tiny random DiT (Wan's keys,
loaded strictly into the official ``WanModel``), the same audio adapter (one
``fantasytalking_model.ckpt``-layout file read by the official ``load_audio_processor`` and by our
loader), the same wav2vec2 features, text and CLIP embeddings (stand-ins that return fixed tensors),
the same tiny VAE and the same noise seed. The official ``WanVideoPipeline.__call__`` then runs its
own loop: resize (``utils.resize_image_by_longest_edge`` + ``check_resize_height_width`` + the
stretch in ``encode_image``), I2V conditioning, audio windows, three-pass guidance, Euler steps.
Ours runs ``FantasyTalkingPipeline.generate`` with default settings but the ones varied. Compared:
the CLIP input, the I2V conditioning ``y``, the audio windows, every guidance pass of every step, the
latent at every step, the final latent and the decoded frames; also the prompt cleaning and the
resize table.

To run on a CPU the official code needs two changes, made here at run time only:
- its attention is flash-attn (CUDA); ``flash_attention``/``attention`` are replaced by an exact
  masked attention in float64 that keeps the key padding mask (``k_lens``), as flash-attn does (the
  official fallback without flash-attn drops the audio padding mask; see docs/official_parity.md);
- its bf16 autocast regions become no-ops, so both sides compute in float32 (precision on a GPU is
  a separate matter: our DiT keeps the official float32 regions, tests/test_wan_model.py).
Packages the official repository imports but this comparison never calls (torchvision, librosa,
modelscope, ...) are replaced by empty modules when they are not installed.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run by path: run again as `python -m <folder>.<name>` (scripts/__init__.py)
    import os, sys  # noqa: E401
    here, name = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", f"{os.path.basename(here)}.{name}", *sys.argv[1:]])

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import math
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
from PIL import Image

from fantasytalking_core.adapters import AudioAdapter, AudioAdapterConfig
from fantasytalking_core.checkpoints import load_audio_adapter
from fantasytalking_core.encoders import clean_prompt, wav2vec_num_tokens
from fantasytalking_core.images import resize_official
from fantasytalking_core.pipeline import (DEFAULT_PROMPT, NEGATIVE_PROMPT, Components, FantasyTalkingPipeline,
                                          GenerationConfig, TinyCausalVAE)
from fantasytalking_core.wan import WanConfig, WanModel, init_random_
from scripts.comfy_host import continue_from

ROOT = Path(__file__).resolve().parents[1]

AUDIO = ROOT / "assets" / "speech_en_16k.wav"
OPTIONAL = ("torchvision", "librosa", "modelscope", "cupy", "controlnet_aux", "imageio")
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Setting:
    name: str
    frames: int = 17
    cfg_text: float = 5.0
    cfg_audio: float = 5.0
    audio_scale: float = 1.0
    image: tuple[int, int] = (96, 96)  # width, height of the portrait before resizing
    size: int = 128


SETTINGS = (
    Setting("17 frames, cfg 5/5"),
    Setting("81 frames, cfg 5/5, audio_scale 0.7", frames=81, audio_scale=0.7),
    Setting("cfg_audio 1 (three passes)", cfg_audio=1.0),
    Setting("cfg_text 1, audio_scale 1.3", cfg_text=1.0, audio_scale=1.3),
    Setting("cfg_text 1, cfg_audio 1", cfg_text=1.0, cfg_audio=1.0),
    Setting("4:5 portrait 80x100 -> 112x128", image=(80, 100)),
    Setting("81 frames, 3:2 landscape 120x80 -> 128x96", frames=81, image=(120, 80), cfg_audio=4.5),
)


# ----------------------------------------------------------------------------- importing the official code


class _Empty(types.ModuleType):
    """An installed-nowhere module the official code imports but this comparison never uses."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Empty(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.__name__} is not installed; official_parity.py does not use it")


class _EmptyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: set[str]):
        self.roots = roots

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Empty(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def import_official(root: Path) -> types.SimpleNamespace:
    """The official modules, with attention swapped for the exact masked one."""
    if not (root / "diffsynth" / "pipelines" / "wan_video.py").is_file() or not (root / "model.py").is_file():
        raise SystemExit(f"{root} is not a copy of Fantasy-AMAP/fantasy-talking (no diffsynth/pipelines/wan_video.py "
                         "or model.py); clone it and pass its folder with --official")
    missing = {name for name in OPTIONAL if importlib.util.find_spec(name) is None}
    if missing:
        sys.meta_path.insert(0, _EmptyFinder(missing))
    import model as ft_model  # the official FantasyTalkingAudioConditionModel (main() runs from its folder)
    import utils as ft_utils
    from diffsynth.models import wan_video_dit
    from diffsynth.pipelines.wan_video import WanVideoPipeline
    from diffsynth.prompters import wan_prompter

    for module in (wan_video_dit, ft_model):
        module.flash_attention = exact_attention
        module.attention = exact_attention
    return types.SimpleNamespace(dit=wan_video_dit, model=ft_model, utils=ft_utils, pipeline=WanVideoPipeline,
                                 prompter=wan_prompter, missing=sorted(missing))


def exact_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None,
                    causal=False, window_size=(-1, -1), deterministic=False, dtype=None, version=None,
                    fa_version=None):
    """flash-attn's varlen semantics (keys past ``k_lens[b]`` ignored) computed exactly in float64."""
    if q_lens is not None or causal or tuple(window_size) != (-1, -1) or dropout_p or q_scale is not None:
        raise NotImplementedError("the official call used an attention feature this comparison does not emulate")
    scale = softmax_scale or 1.0 / math.sqrt(q.shape[-1])
    scores = torch.einsum("bqnd,bknd->bnqk", q.double(), k.double()) * scale
    if k_lens is not None:
        keep = torch.arange(k.shape[1])[None, :] < k_lens.to(torch.long)[:, None]  # [B, Lk]
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    return torch.einsum("bnqk,bknd->bqnd", scores.softmax(-1), v.double()).to(q.dtype).contiguous()


@contextlib.contextmanager
def no_autocast():
    """The official loop's ``torch.amp.autocast`` regions as no-ops: float32 on both sides."""
    real = torch.amp.autocast
    torch.amp.autocast = lambda *args, **kwargs: contextlib.nullcontext()
    try:
        yield
    finally:
        torch.amp.autocast = real


# ----------------------------------------------------------------------------- shared stand-ins


class FixedText:
    """Text encoder stand-in: each prompt -> its fixed random embedding ``[L, text_dim]``."""

    def __init__(self, text_dim: int):
        g = torch.Generator().manual_seed(21)
        self.table = {DEFAULT_PROMPT: torch.randn(7, text_dim, generator=g),
                      NEGATIVE_PROMPT: torch.randn(12, text_dim, generator=g)}

    def __call__(self, texts):  # ours: list of prompts -> list of [L_i, D]
        return [self.table[t] for t in texts]

    def encode_prompt(self, prompt, positive=True):  # the official prompter's call
        return [self.table[prompt]]


class PatchTokens:
    """CLIP stand-in: [1, 3, H, W] in -1..1 -> 257 tokens (bicubic to 224, 14-px patches, a fixed
    projection, a class token), so any difference in the image shows in the tokens."""

    def __init__(self, width: int):
        g = torch.Generator().manual_seed(22)
        self.proj = torch.randn(3 * 14 * 14, width, generator=g) * 0.05
        self.cls = torch.randn(1, 1, width, generator=g)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(image.float(), size=(224, 224), mode="bicubic", align_corners=False)
        patches = F.unfold(x, kernel_size=14, stride=14).transpose(1, 2)  # [1, 256, 588]
        return torch.cat([self.cls, patches @ self.proj], dim=1)

    def encode_image(self, images):  # the official image encoder's call
        return self(images[0])


class OfficialVAE:
    """Our tiny VAE behind the official ``WanVideoVAE`` calls."""

    def __init__(self, vae: TinyCausalVAE):
        self.vae = vae

    def encode(self, videos, device=None, **tiling):
        return self.vae.encode(torch.stack(list(videos)))

    def decode(self, latents, device=None, **tiling):
        return self.vae.decode(latents)


class Features:
    """wav2vec2 stand-in: the first L rows of fixed random features, L from the samples it is given."""

    def __init__(self):
        self.all = torch.randn(1, 400, 768, generator=torch.Generator().manual_seed(23))
        self.given: list[int] = []

    def encode(self, wave16k: torch.Tensor) -> torch.Tensor:
        self.given.append(wave16k.numel())
        return self.all[:, : wav2vec_num_tokens(wave16k.numel())]


def record_calls(module: torch.nn.Module, into: list) -> torch.utils.hooks.RemovableHandle:
    def hook(mod, args, kwargs, out):
        into.append((args, kwargs, out.detach().clone()))

    return module.register_forward_hook(hook, with_kwargs=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ----------------------------------------------------------------------------- one setting


def run_setting(s: Setting, official: types.SimpleNamespace, steps: int, work: Path) -> dict:
    cfg = WanConfig.tiny().with_(clip_dim=1280)  # the official img_emb is hard-wired to CLIP ViT-H's 1280
    ours_dit = init_random_(WanModel(cfg), seed=1).eval()
    adapter = init_random_(AudioAdapter(AudioAdapterConfig.for_wan(cfg, proj_dim=64)), seed=2, std=0.2).eval()
    sd = adapter.state_dict()
    ckpt = work / "fantasytalking_model.ckpt"
    torch.save({part: {k[len(part) + 1:]: v for k, v in sd.items() if k.startswith(part + ".")}
                for part in ("proj_model", "audio_processor")}, ckpt)
    text, clip, features = FixedText(cfg.text_dim), PatchTokens(cfg.clip_dim), Features()
    vae = TinyCausalVAE().eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for p in vae.parameters():
            p.normal_(0, 0.05)
    image_path = work / f"portrait_{s.image[0]}x{s.image[1]}.png"
    Image.fromarray(_portrait(*s.image)).save(image_path)

    # -- the official side
    off_dit = official.dit.WanModel(model_type="i2v", patch_size=cfg.patch_size, text_len=cfg.text_len,
                                    in_dim=cfg.in_dim, dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim,
                                    text_dim=cfg.text_dim, out_dim=cfg.out_dim, num_heads=cfg.num_heads,
                                    num_layers=cfg.num_layers, qk_norm=cfg.qk_norm,
                                    cross_attn_norm=cfg.cross_attn_norm, eps=cfg.eps).eval()
    off_dit.load_state_dict(ours_dit.state_dict(), strict=True)
    ft = official.model.FantasyTalkingAudioConditionModel(off_dit, 768, adapter.cfg.proj_dim)
    ft.load_audio_processor(str(ckpt), off_dit)
    pipe = official.pipeline(device="cpu", torch_dtype=torch.float32)
    pipe.dit, pipe.prompter, pipe.image_encoder, pipe.vae = off_dit, text, clip, OfficialVAE(vae)
    duration = soundfile.info(str(AUDIO)).duration
    # infer.py's own frame count and latent length, copied rather than taken from fantasytalking_core.frames:
    # this side is the official code, the reference ours is checked against
    num_frames = min(int(23 * duration // 4) * 4 + 5, s.frames)
    samples = int(num_frames / 23 * 16000)  # utils.get_audio_features' cut
    feats = features.all[:, : wav2vec_num_tokens(samples)]
    image = official.utils.resize_image_by_longest_edge(str(image_path), s.size)
    off_calls, off_decode, off_clip = [], [], []
    with torch.no_grad(), no_autocast(), contextlib.redirect_stdout(io.StringIO()):  # its notes on rounding
        proj = ft.get_proj_fea(feats)
        ranges = ft.split_audio_sequence(proj.size(1), num_frames=num_frames)
        audio_proj, audio_lens = ft.split_tensor_with_padding(proj, ranges, expand_length=4)
        handles = [record_calls(off_dit, off_calls)]
        real_clip, real_decode = clip.encode_image, pipe.vae.decode
        clip.encode_image = lambda images: off_clip.append(images[0].clone()) or real_clip(images)
        pipe.vae.decode = lambda latents, *a, **k: off_decode.append(latents.clone()) or real_decode(latents)
        off_frames = pipe(prompt=DEFAULT_PROMPT, negative_prompt=NEGATIVE_PROMPT, input_image=image,
                          width=image.size[0], height=image.size[1], num_frames=num_frames, num_inference_steps=steps,
                          seed=1111, tiled=True, audio_scale=s.audio_scale, cfg_scale=s.cfg_text,
                          audio_cfg_scale=s.cfg_audio, audio_proj=audio_proj, audio_context_lens=audio_lens,
                          latents_num_frames=(num_frames - 1) // 4 + 1, progress_bar_cmd=lambda x: x)
        for h in handles:
            h.remove()

    # -- our side
    comps = Components(dit=ours_dit, audio=load_audio_adapter(ckpt), vae=vae, text_encoder=text,
                       clip_encoder=clip, wav2vec=features)
    config = GenerationConfig(size=s.size, max_frames=s.frames, steps=steps, cfg_text=s.cfg_text,
                              cfg_audio=s.cfg_audio, audio_scale=s.audio_scale)
    our_calls, our_decode, our_clip = [], [], []
    real_encode, real_vae_decode = clip.__call__, vae.decode
    handles = [record_calls(ours_dit, our_calls)]
    comps.clip_encoder = lambda img: our_clip.append(img.clone()) or real_encode(img)
    vae.decode = lambda latents: our_decode.append(latents.clone()) or real_vae_decode(latents)
    with torch.no_grad():
        result = FantasyTalkingPipeline(comps).generate(str(image_path), str(AUDIO), DEFAULT_PROMPT, NEGATIVE_PROMPT,
                                                        config, progress=False)
        our_windows = comps.audio.condition(features.encode(torch.zeros(features.given[0])), num_frames)
    for h in handles:
        h.remove()
    return compare(s, config, steps, num_frames, samples, features, off_calls, our_calls, off_clip, our_clip,
                   audio_proj, audio_lens, our_windows, off_decode, our_decode, off_frames, result)


def compare(s, config, steps, num_frames, samples, features, off_calls, our_calls, off_clip, our_clip,
            audio_proj, audio_lens, our_windows, off_decode, our_decode, off_frames, result) -> dict:
    """Pass by pass, step by step: worst relative errors and the checks that must be exact."""
    guidance = config.guidance()
    official_names = ["pos_audio", "pos_noaudio"] + (["neg_noaudio"] if s.cfg_text != 1.0 else [])
    per_step = len(official_names)
    if len(off_calls) != steps * per_step or len(our_calls) != steps:
        raise RuntimeError(f"{s.name}: {len(off_calls)} official DiT calls and {len(our_calls)} of ours for {steps} "
                           f"steps; expected {steps * per_step} and {steps}")
    worst_pass, worst_latent, compared = 0.0, 0.0, 0
    for i in range(steps):
        off = {name: off_calls[i * per_step + j] for j, name in enumerate(official_names)}
        args, _, out = our_calls[i]
        ours = dict(zip(guidance.passes(i, steps), out.split(1)))
        worst_latent = max(worst_latent, rel(args[0][:1], off["pos_audio"][0][0]))
        for name in ours.keys() & off.keys():
            worst_pass = max(worst_pass, rel(ours[name], off[name][2]))
            compared += 1
    off_kwargs, our_args = off_calls[0][1], our_calls[0][0]
    frames_ours = (result.frames.numpy() * 255).round()
    frames_off = np.stack([np.asarray(f, dtype=np.float64) for f in off_frames])[: frames_ours.shape[0]]
    row = {
        "setting": s.name, "frames": num_frames, "size": f"{result.frames.shape[2]}x{result.frames.shape[1]}",
        "audio_samples_equal": features.given[0] == samples,
        "clip_input": rel(our_clip[0], off_clip[0]),
        "y": rel(our_args[4][:1], off_kwargs["y"][0][None]),
        "audio_windows": max(rel(our_windows.tokens, audio_proj), float((our_windows.k_lens != audio_lens).any())),
        "passes_compared": compared, "worst_pass": worst_pass, "worst_step_latent": worst_latent,
        "final_latent": rel(our_decode[0], off_decode[0]),
        "frames_max_abs_diff_uint8": float(np.abs(frames_ours - frames_off).max()),
    }
    numbers = [row[k] for k in ("clip_input", "y", "audio_windows", "worst_pass", "worst_step_latent", "final_latent")]
    row["ok"] = row["audio_samples_equal"] and all(v <= TOLERANCE for v in numbers) and \
        frames_ours.shape[0] == num_frames and row["frames_max_abs_diff_uint8"] <= 1
    return row


def _portrait(w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 7.0) * np.cos(yy / 5.0)], -1) * 255
    img[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 3) ** 2] = (230, 180, 150)
    return img.astype(np.uint8)


# ----------------------------------------------------------------------------- the exact checks


def prompt_rows(official) -> list[dict]:
    texts = [NEGATIVE_PROMPT, DEFAULT_PROMPT, "  A  woman&amp;amp;a man\n\ttalk caf\u00c3\u00a9 \uff21\uff22 "]
    clean = official.prompter
    return [{"text": t[:24] + "...", "equal": clean_prompt(t) == clean.whitespace_clean(clean.basic_clean(t))}
            for t in texts]


def resize_rows(official, work: Path) -> list[dict]:
    rows = []
    for w, h in ((800, 1000), (1200, 800), (1920, 1080), (1080, 1920), (1000, 1000), (1000, 600), (97, 61)):
        path = work / f"resize_{w}x{h}.png"
        Image.fromarray(_portrait(w, h)).save(path)
        image = official.utils.resize_image_by_longest_edge(str(path), 512)
        pipe = official.pipeline(device="cpu", torch_dtype=torch.float32)
        with contextlib.redirect_stdout(io.StringIO()):
            height, width = pipe.check_resize_height_width(image.size[1], image.size[0])
        theirs = np.asarray(image.resize((width, height)))  # WanVideoPipeline.encode_image's stretch
        ours = np.asarray(resize_official(Image.open(path).convert("RGB"), 512))
        rows.append({"input": f"{w}x{h}", "official": f"{width}x{height}", "ours": f"{ours.shape[1]}x{ours.shape[0]}",
                     "pixels_equal": theirs.shape == ours.shape and bool((theirs == ours).all())})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", type=Path, required=True, help="local copy of Fantasy-AMAP/fantasy-talking")
    p.add_argument("--steps", type=int, default=5, help="sampling steps per setting (default 5)")
    p.add_argument("--only", help="run the settings whose name contains one of these comma-separated texts")
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    root = args.official.expanduser().resolve()
    if (root / "model.py").is_file():  # its modules first, as for its infer.py (else import_official says what is wrong)
        continue_from(root, "model", "scripts.official_parity", sys.argv[1:] if argv is None else argv, ("--official", "--json"))
    torch.set_grad_enabled(False)
    official = import_official(root)
    settings = [s for s in SETTINGS if not args.only or any(part in s.name for part in args.only.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [run_setting(s, official, args.steps, work) for s in settings]
        prompts, resizes = prompt_rows(official), resize_rows(official, work)
    print(f"official code: {args.official} (stand-ins for uninstalled imports: {official.missing or 'none'}); "
          f"torch {torch.__version__}; float32 on the CPU; {args.steps} Euler steps; relative errors ||a-b||/||b||")
    print("| setting | frames | size | clip input | y | audio windows | passes | worst pass | worst step latent "
          "| final latent | frames max diff (0-255) | ok |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['frames']} | {r['size']} | {r['clip_input']:.1e} | {r['y']:.1e} | "
              f"{r['audio_windows']:.1e} | {r['passes_compared']} | {r['worst_pass']:.1e} | "
              f"{r['worst_step_latent']:.1e} | {r['final_latent']:.1e} | {r['frames_max_abs_diff_uint8']:.0f} | "
              f"{'yes' if r['ok'] else 'NO'} |")
    print("\nresize (size 512): " + "; ".join(f"{r['input']} -> official {r['official']}, ours {r['ours']}, pixels "
                                            f"{'equal' if r['pixels_equal'] else 'DIFFER'}" for r in resizes))
    print("prompt cleaning (ftfy + html + whitespace): " + "; ".join(
        f"{r['text']!r} {'equal' if r['equal'] else 'DIFFERS'}" for r in prompts))
    ok = all(r["ok"] for r in rows) and all(r["pixels_equal"] for r in resizes) and all(r["equal"] for r in prompts)
    print(f"\n{'PASS' if ok else 'FAIL'}: every setting within {TOLERANCE:g} relative" if ok else "\nFAIL")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "resize": resizes, "prompts": prompts, "ok": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
