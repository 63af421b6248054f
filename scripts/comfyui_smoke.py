#!/usr/bin/env python3
"""Run this node pack inside a real ComfyUI, headless on CPU, on tiny random-weight model files.

    python scripts/comfyui_smoke.py --comfyui /path/to/ComfyUI          # or COMFYUI_PATH=...
    python scripts/comfyui_smoke.py --list                               # the workflows it knows
    python scripts/comfyui_smoke.py --only core_wan_i2v --models-dir /tmp/smoke-models --keep /tmp/smoke

What it does: writes tiny model files that core's own loaders accept (one function per file kind
below), lays out a temporary ComfyUI base directory (models/, input/, output/, custom_nodes/ with a
link to this pack), starts ``main.py --cpu`` on a free local port with ComfyUI's own interpreter
(``--python``, $COMFYUI_PYTHON, else ``$COMFYUI/.venv/bin/python``, else this one), checks that
every node of the pack's NODE_CLASS_MAPPINGS is served by /object_info, posts each workflow of
WORKFLOWS to /prompt, polls /history, checks the outputs, prints a table, stops the server and
exits 1 on any failure (printing the tail of the server log).

To add a workflow: write ``build(ctx) -> API-format graph`` and ``check(ctx, outputs) -> details``
(raise SmokeFailure on a bad output) and append a ``Workflow`` to WORKFLOWS, listing the model
kinds it needs (keys of MODEL_FILES) so only those files are made.

Why the text encoder is CLIP-L with CLIPLoader type "sd3": core's Wan DiT always has text_dim 4096
and core's "wan" text encoder is UMT5-XXL with a fixed 5.7B-parameter config; the SD3 text encoder
with only CLIP-L zero-pads CLIP-L's 768-d output to 4096, so a 123M-parameter file gives a
CONDITIONING the Wan DiT accepts. No CLIP vision by default: WanImageToVideo and core's WanModel run
I2V without clip_fea, and core's Wan img_emb needs ViT-H (632M parameters); ``clip_vision_h``
below makes one for workflows that want it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-FantasyTalking"
SPEECH_WAV = PACK_ROOT.parent / "shared" / "fixtures" / "speech_en_16k.wav"


class SmokeFailure(Exception):
    """A check failed; the message says what and where."""


sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, however this file is loaded
from comfy_tiny_models import (FORMAT_TAG, MODEL_FILES, clip_l_text_shapes, clip_vision_h_shapes,  # noqa: E402,F401
                               ensure_model, make_wan_dit, random_state, wan_vae_shapes, wav2vec2_base_shapes)


# ------------------------------------------------------------------------------------- inputs


def make_portrait(path: Path, size: int = 256) -> Path:
    """A real face photo (skimage's astronaut, head and shoulders) as PNG, else a gradient."""
    import numpy as np
    from PIL import Image

    try:
        from skimage import data

        img = Image.fromarray(data.astronaut()[0:320, 60:380]).resize((size, size), Image.LANCZOS)
    except ImportError:
        yy, xx = np.mgrid[0:size, 0:size]
        img = Image.fromarray(np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.uint8) % 256)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


# ------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def comfy_python(comfyui: Path, explicit: str | None = None) -> str:
    """ComfyUI's interpreter: --python, $COMFYUI_PYTHON, $COMFYUI/.venv/bin/python, else ours."""
    for cand in (explicit, os.environ.get("COMFYUI_PYTHON")):
        if cand:
            return cand
    venv = comfyui / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


class ComfyServer:
    """``main.py --cpu`` on a free 127.0.0.1 port with every directory under ``base``."""

    def __init__(self, comfyui: Path, python: str, base: Path, log_path: Path, extra_args: list[str] = ()):
        self.comfyui, self.python, self.base, self.log_path = comfyui, python, base, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                    "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
                    "--disable-auto-launch", "--preview-method", "none", *extra_args]
        self.proc: subprocess.Popen | None = None
        self.startup_s = float("nan")

    def start(self, timeout: float = 300.0) -> None:
        t0 = time.monotonic()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=self.comfyui, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SmokeFailure(f"ComfyUI exited with code {self.proc.returncode} while starting")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2):
                    self.startup_s = time.monotonic() - t0
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        raise SmokeFailure(f"ComfyUI did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def get(self, route: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.url + route, timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, route: str, payload: dict, timeout: float = 60.0):
        req = urllib.request.Request(self.url + route, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 400: validation errors, in the body
            body = e.read().decode(errors="replace")
            raise SmokeFailure(f"POST {route} -> HTTP {e.code}: {body[:3000]}") from None

    def run_prompt(self, graph: dict, timeout: float) -> dict:
        """Queue an API-format graph and wait for it: the /history entry's ``outputs``."""
        prompt_id = self.post("/prompt", {"prompt": graph, "client_id": "fantasytalking-smoke"})["prompt_id"]
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SmokeFailure(f"ComfyUI died (code {self.proc.returncode}) while running the prompt")
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") != "success":
                    raise SmokeFailure("execution failed: " + _execution_error(status))
                return entry.get("outputs", {})
            time.sleep(0.5)
        self.post("/interrupt", {})
        raise SmokeFailure(f"prompt {prompt_id} did not finish within {timeout:.0f} s")


def _execution_error(status: dict) -> str:
    for kind, msg in status.get("messages", []):
        if kind == "execution_error":
            tb = "".join(msg.get("traceback", [])[-6:])
            return f"node {msg.get('node_id')} ({msg.get('node_type')}): {msg.get('exception_type')}: " \
                   f"{msg.get('exception_message')}\n{tb}"
    return json.dumps(status)[:2000]


def pack_node_names(python: str, comfyui: Path, pack: Path) -> list[str]:
    """The pack's NODE_CLASS_MAPPINGS keys, imported the way ComfyUI imports it (its interpreter,
    its modules first on sys.path, the pack as a package)."""
    code = (
        "import importlib.util, json, sys\n"
        f"sys.path.insert(0, {str(comfyui)!r})\n"
        "sys.argv = ['main.py', '--cpu']  # comfy.model_management needs --cpu on a machine without GPU\n"
        "import comfy.options; comfy.options.enable_args_parsing()\n"
        f"spec = importlib.util.spec_from_file_location('smoke_pack', {str(pack / '__init__.py')!r},"
        f" submodule_search_locations=[{str(pack)!r}])\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['smoke_pack'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "print('NODES=' + json.dumps(sorted(mod.NODE_CLASS_MAPPINGS)))\n"
    )
    r = subprocess.run([python, "-c", code], cwd=comfyui, capture_output=True, text=True, timeout=300)
    for line in r.stdout.splitlines():
        if line.startswith("NODES="):
            return json.loads(line[6:])
    raise SmokeFailure(f"importing the pack failed (code {r.returncode}):\n{r.stderr[-3000:]}")


# ---------------------------------------------------------------------------------- workflows


@dataclass
class Context:
    """What a workflow builder/checker may use: file names as ComfyUI lists them, and the dirs."""

    base: Path
    models: dict[str, str]  # kind -> name for the loader combo (e.g. "smoke_wan21_vae.safetensors")
    inputs: dict[str, str]  # "image", "audio" -> name in the input dir
    object_info: dict = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return self.base / "output"


@dataclass
class Workflow:
    name: str
    build: Callable[[Context], dict]  # -> API-format graph {"id": {"class_type", "inputs"}}
    check: Callable[[Context, dict], str]  # (ctx, history outputs) -> details; raises SmokeFailure
    needs: tuple[str, ...] = ()  # keys of MODEL_FILES
    timeout_s: float = 600.0
    default: bool = True  # False: only with --all or --only (heavy ones)


def saved_files(ctx: Context, outputs: dict, node_id: str) -> list[Path]:
    """Files a save node reported in /history (``{"images": [{filename, subfolder, type}]}``)."""
    items = outputs.get(node_id, {})
    found = [ctx.output_dir / i.get("subfolder", "") / i["filename"]
             for key in ("images", "videos", "gifs", "audio", "latents") for i in items.get(key, []) if i.get("type") == "output"]
    if not found:
        raise SmokeFailure(f"node {node_id} reported no output file; history outputs: {json.dumps(outputs)[:1000]}")
    for p in found:
        if not p.is_file():
            raise SmokeFailure(f"node {node_id} reported {p}, which does not exist")
    return found


def probe_video(path: Path) -> dict:
    """Decoded facts of a video file (PyAV): frames, fps, size, audio streams and seconds."""
    import av
    import numpy as np

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        info = {"frames": len(frames), "fps": v.average_rate, "width": v.codec_context.width,
                "height": v.codec_context.height, "audio_streams": len(c.streams.audio),
                "pixel_std": float(np.stack(frames).std()) if frames else 0.0}
    if info["audio_streams"]:
        with av.open(str(path)) as c:
            a = c.streams.audio[0]
            samples = sum(f.samples for f in c.decode(audio=0))
            info["audio_s"] = samples / a.rate
            info["audio_rate"] = a.rate
    return info


def check_video(path: Path, frames: int, fps: float, width: int, height: int, audio: bool) -> str:
    info = probe_video(path)
    want = {"frames": frames, "width": width, "height": height, "audio_streams": int(audio)}
    bad = {k: (info[k], v) for k, v in want.items() if info[k] != v}
    if info["fps"] != Fraction(fps).limit_denominator(1001):
        bad["fps"] = (info["fps"], fps)
    if audio and info.get("audio_s", 0.0) <= 0.0:
        bad["audio_s"] = (info.get("audio_s"), "> 0")
    if info["pixel_std"] == 0.0:
        bad["pixel_std"] = (0.0, "> 0 (every pixel the same)")
    if bad:
        raise SmokeFailure(f"{path.name}: " + ", ".join(f"{k} is {got}, expected {exp}" for k, (got, exp) in bad.items()))
    audio_txt = f", audio {info['audio_s']:.2f} s @ {info['audio_rate']} Hz" if audio else ""
    return f"{path.name}: {info['frames']} frames {info['width']}x{info['height']} @ {info['fps']} fps{audio_txt}"


# The core-only I2V graph: the same loaders, conditioning and save nodes a FantasyTalking graph
# uses, so a failure here is in the host setup, not in the pack.
CORE_I2V = {"width": 64, "height": 48, "length": 9, "fps": 23.0, "steps": 2}


def build_core_wan_i2v(ctx: Context) -> dict:
    c = CORE_I2V
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": ctx.inputs["image"]}},
        "2": {"class_type": "LoadAudio", "inputs": {"audio": ctx.inputs["audio"]}},
        "3": {"class_type": "CLIPLoader", "inputs": {"clip_name": ctx.models["clip_l"], "type": "sd3", "device": "default"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "a woman talking to the camera"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "blurry, static"}},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": ctx.models["wan_vae"]}},
        "7": {"class_type": "UNETLoader", "inputs": {"unet_name": ctx.models["wan_dit"], "weight_dtype": "default"}},
        "8": {"class_type": "WanImageToVideo", "inputs": {
            "positive": ["4", 0], "negative": ["5", 0], "vae": ["6", 0], "start_image": ["1", 0],
            "width": c["width"], "height": c["height"], "length": c["length"], "batch_size": 1}},
        "9": {"class_type": "KSampler", "inputs": {
            "model": ["7", 0], "positive": ["8", 0], "negative": ["8", 1], "latent_image": ["8", 2],
            "seed": 1111, "steps": c["steps"], "cfg": 5.0, "sampler_name": "euler", "scheduler": "simple",
            "denoise": 1.0}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["6", 0]}},
        "11": {"class_type": "CreateVideo", "inputs": {"images": ["10", 0], "fps": c["fps"], "audio": ["2", 0]}},
        "12": {"class_type": "SaveVideo", "inputs": {
            "video": ["11", 0], "filename_prefix": "smoke/core_wan_i2v", "format": "mp4", "codec": "h264"}},
    }


def check_core_wan_i2v(ctx: Context, outputs: dict) -> str:
    c = CORE_I2V
    (video,) = saved_files(ctx, outputs, "12")
    return check_video(video, frames=c["length"], fps=c["fps"], width=c["width"], height=c["height"], audio=True)


def build_core_wan_i2v_clip_vision(ctx: Context) -> dict:
    """The same graph with a CLIP ViT-H image embedding (257 tokens in front of the text context)."""
    g = build_core_wan_i2v(ctx)
    g["13"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": ctx.models["clip_vision_h"]}}
    g["14"] = {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["13", 0], "image": ["1", 0], "crop": "none"}}
    g["8"]["inputs"]["clip_vision_output"] = ["14", 0]
    g["12"]["inputs"]["filename_prefix"] = "smoke/core_wan_i2v_clip_vision"
    return g


def build_core_audio_encoder(ctx: Context) -> dict:
    """Core's AudioEncoderLoader/Encode on the wav2vec2 file, consumed by Wan S2V's conditioning
    node (the only core consumer of AUDIO_ENCODER_OUTPUT) and saved as a latent so it runs."""
    c = CORE_I2V
    return {
        "2": {"class_type": "LoadAudio", "inputs": {"audio": ctx.inputs["audio"]}},
        "3": {"class_type": "CLIPLoader", "inputs": {"clip_name": ctx.models["clip_l"], "type": "sd3", "device": "default"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "a woman talking"}},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": ctx.models["wan_vae"]}},
        "20": {"class_type": "AudioEncoderLoader", "inputs": {"audio_encoder_name": ctx.models["wav2vec2"]}},
        "21": {"class_type": "AudioEncoderEncode", "inputs": {"audio_encoder": ["20", 0], "audio": ["2", 0]}},
        "22": {"class_type": "WanSoundImageToVideo", "inputs": {
            "positive": ["4", 0], "negative": ["4", 0], "vae": ["6", 0], "audio_encoder_output": ["21", 0],
            "width": c["width"], "height": c["height"], "length": c["length"], "batch_size": 1}},
        "23": {"class_type": "SaveLatent", "inputs": {"samples": ["22", 2], "filename_prefix": "smoke/core_audio_encoder"}},
    }


def check_core_audio_encoder(ctx: Context, outputs: dict) -> str:
    from safetensors import safe_open

    c = CORE_I2V
    (path,) = saved_files(ctx, outputs, "23")
    with safe_open(str(path), "pt") as f:
        shape = tuple(f.get_slice("latent_tensor").get_shape())
    want = (1, 16, (c["length"] - 1) // 4 + 1, c["height"] // 8, c["width"] // 8)
    if shape != want:
        raise SmokeFailure(f"{path.name}: latent_tensor shape {shape}, expected {want}")
    return f"wav2vec2 loaded and encoded; {path.name}: latent {list(shape)}"


# ------------------------------------------------------------ the pack's example workflows, for real
# The graphs of example_workflows/ (scripts/example_workflows.py), with the tiny files swapped in.
import example_workflows as ew  # noqa: E402

PACK_SIZE = ew.Size(width=64, height=48, steps=2, max_frames=17)
PACK_NEEDS = ("wan_dit", "wan_vae", "clip_l", "wav2vec2", "ft_ckpt")


def _pack_files(ctx: Context) -> ew.Files:
    return ew.Files(wan=ctx.models["wan_dit"], fantasytalking=MODEL_FILES["ft_ckpt"][1],
                    adapters_with_identity=MODEL_FILES["ft_adapters"][1], wav2vec=MODEL_FILES["wav2vec2"][1],
                    vae=ctx.models["wan_vae"], text_encoder=ctx.models["clip_l"], text_encoder_type="sd3",
                    clip_vision=None, image=ctx.inputs["image"], audio=ctx.inputs["audio"],
                    video=ctx.inputs.get("video", ""), insightface_pack="smoke_pack")


def _speech_frames(cap: int) -> int:
    """The frame count FantasyTalking Audio Encode gives the fixture speech (capped unless cap is 0)."""
    import soundfile

    from fantasytalking_core.audio import total_frames_for_audio

    n = total_frames_for_audio(soundfile.info(str(SPEECH_WAV)).duration, 23.0)
    return min(n, cap) if cap else n


def pack_workflow(name: str, frames_cap: int) -> tuple[Callable, Callable]:
    def build(ctx: Context) -> dict:
        g = ew.api_graphs(_pack_files(ctx), PACK_SIZE)[name]
        g["save"]["inputs"]["filename_prefix"] = f"smoke/{name}"
        return g

    def check(ctx: Context, outputs: dict) -> str:
        (video,) = saved_files(ctx, outputs, "save")
        frames = _speech_frames(frames_cap)
        detail = check_video(video, frames=frames, fps=23.0, width=PACK_SIZE.width, height=PACK_SIZE.height, audio=True)
        info = probe_video(video)
        if abs(info["audio_s"] - frames / 23.0) > 0.05:  # the audio was cut to the video
            raise SmokeFailure(f"{video.name}: audio {info['audio_s']:.3f} s for {frames / 23.0:.3f} s of video")
        if "face_preview" in outputs and not outputs["face_preview"].get("images"):
            raise SmokeFailure("the face crop preview produced no image")
        return detail

    return build, check


def build_lip_mask(ctx: Context) -> dict:
    return ew.api_graphs(_pack_files(ctx), PACK_SIZE)["04_lip_mask_preview"]


def check_lip_mask(ctx: Context, outputs: dict) -> str:
    counts = {k: len(outputs.get(k, {}).get("images", [])) for k in ("preview", "mask_preview")}
    if counts != {"preview": LIP_VIDEO_FRAMES, "mask_preview": LIP_VIDEO_FRAMES}:
        raise SmokeFailure(f"expected {LIP_VIDEO_FRAMES} preview images from each preview node, got {counts}")
    return f"{LIP_VIDEO_FRAMES} lip-mask previews and {LIP_VIDEO_FRAMES} mask images"


LIP_VIDEO_FRAMES = 6


def build_adapters_act(ctx: Context) -> dict:
    """One prompt, five latents from the same inputs: core's KSampler on the plain model; our
    sampler (cfg 1/1, one pass) with audio_scale 0 and 1; our sampler and our Guider +
    SamplerCustomAdvanced with cfg_text 5 / cfg_audio 4.5 (three passes through core's batching)."""
    g = {k: v for k, v in build_core_wan_i2v(ctx).items() if k not in ("9", "10", "11", "12")}
    g["8"]["inputs"]["length"] = ["31", 1]
    g["30"] = {"class_type": "FantasyTalkingWav2VecLoader", "inputs": {"model_name": MODEL_FILES["wav2vec2"][1], "device": "cpu"}}
    g["31"] = {"class_type": "FantasyTalkingAudioEncode", "inputs": {
        "audio": ["2", 0], "wav2vec": ["30", 0], "fps": 23.0, "frames": 9, "max_frames": 81}}
    g["32"] = {"class_type": "FantasyTalkingModelLoader", "inputs": {"model_name": MODEL_FILES["ft_ckpt"][1], "precision": "fp32"}}
    for key, scale in (("33", 0.0), ("34", 1.0)):
        g[key] = {"class_type": "FantasyTalkingApply", "inputs": {
            "model": ["7", 0], "fantasytalking_model": ["32", 0], "audio_features": ["31", 0],
            "audio_scale": scale, "audio_mode": "frame"}}
    common = {"positive": ["8", 0], "negative": ["8", 1], "latent_image": ["8", 2], "seed": 7, "steps": 2,
              "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}
    g["40"] = {"class_type": "KSampler", "inputs": {"model": ["7", 0], "cfg": 1.0, **common}}
    ours = {**common, "audio_guidance_start": 0.0, "audio_guidance_end": 1.0, "shift": 0.0}
    g["41"] = {"class_type": "FantasyTalkingSampler", "inputs": {"model": ["33", 0], "cfg_text": 1.0, "cfg_audio": 1.0, **ours}}
    g["42"] = {"class_type": "FantasyTalkingSampler", "inputs": {"model": ["34", 0], "cfg_text": 1.0, "cfg_audio": 1.0, **ours}}
    g["43"] = {"class_type": "FantasyTalkingSampler", "inputs": {"model": ["34", 0], "cfg_text": 5.0, "cfg_audio": 4.5, **ours}}
    g["50"] = {"class_type": "FantasyTalkingGuider", "inputs": {
        "model": ["34", 0], "positive": ["8", 0], "negative": ["8", 1], "cfg_text": 5.0, "cfg_audio": 4.5,
        "audio_guidance_start": 0.0, "audio_guidance_end": 1.0}}
    g["51"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}}
    g["52"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    g["53"] = {"class_type": "BasicScheduler", "inputs": {"model": ["34", 0], "scheduler": "simple", "steps": 2, "denoise": 1.0}}
    g["54"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["51", 0], "guider": ["50", 0], "sampler": ["52", 0], "sigmas": ["53", 0], "latent_image": ["8", 2]}}
    for key, src in (("60", ["40", 0]), ("61", ["41", 0]), ("62", ["42", 0]), ("63", ["43", 0]), ("64", ["54", 0])):
        g[key] = {"class_type": "SaveLatent", "inputs": {"samples": src, "filename_prefix": f"smoke/act_{key}"}}
    return g


def build_adapters_act_fp8(ctx: Context) -> dict:
    """The same checks on the DiT loaded by UNETLoader as fp8_e4m3fn (core's fp8 weight casting)."""
    g = build_adapters_act(ctx)
    g["7"]["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    for key in ("60", "61", "62", "63", "64"):
        g[key]["inputs"]["filename_prefix"] = g[key]["inputs"]["filename_prefix"].replace("act_", "act_fp8_")
    return g


def check_adapters_act(ctx: Context, outputs: dict) -> str:
    from safetensors.torch import load_file

    lat = {k: load_file(str(saved_files(ctx, outputs, k)[0]))["latent_tensor"].float() for k in ("60", "61", "62", "63", "64")}
    core, off, on, guided, custom = (lat[k] for k in ("60", "61", "62", "63", "64"))
    problems = []
    if not (off - core).abs().max() <= 1e-5:
        problems.append(f"audio_scale 0 differs from core KSampler by {(off - core).abs().max():.3g}")
    if (on - off).abs().max() < 1e-3:
        problems.append("audio_scale 1 gives the same latent as audio_scale 0: the adapters did not act")
    if not (guided - custom).abs().max() <= 1e-5:
        problems.append(f"FantasyTalkingSampler and Guider+SamplerCustomAdvanced differ by {(guided - custom).abs().max():.3g}")
    if (guided - on).abs().max() < 1e-3:
        problems.append("cfg 5/4.5 gives the cfg 1/1 latent: guidance did nothing")
    if problems:
        raise SmokeFailure("; ".join(problems))
    return (f"scale 0 = KSampler (max diff {(off - core).abs().max():.1e}); scale 1 moves it by "
            f"{(on - off).abs().max():.2f}; Sampler = Guider+SamplerCustomAdvanced (max diff {(guided - custom).abs().max():.1e})")


def make_talking_video(path: Path, portrait: Path) -> Path:
    """A short mp4 of the portrait drifting, with the fixture speech, for LoadVideo."""
    import numpy as np
    import soundfile
    from PIL import Image

    if str(PACK_ROOT) not in sys.path:
        sys.path.append(str(PACK_ROOT))
    from fantasytalking_core.video import write_video

    img = np.asarray(Image.open(portrait).convert("RGB"))
    frames = np.stack([np.roll(img, (i, i // 2), axis=(0, 1)) for i in range(LIP_VIDEO_FRAMES)])
    wave, rate = soundfile.read(str(SPEECH_WAV), dtype="float32")
    path.unlink(missing_ok=True)
    return write_video(frames, path, 23, wave[: int(rate * LIP_VIDEO_FRAMES / 23)], rate)


def build_lora(ctx: Context) -> dict:
    """Core's LoraLoaderModelOnly before and after FantasyTalking Apply: the LoRA must reach the
    modules Apply patches (cross_attn.o) as well as the others, in either order."""
    g = build_adapters_act(ctx)
    g = {k: v for k, v in g.items() if k in {"1", "2", "3", "4", "5", "6", "7", "8", "30", "31", "32"}}
    g["70"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["7", 0], "lora_name": MODEL_FILES["lora"][1],
                                                               "strength_model": 1.0}}
    apply = {"fantasytalking_model": ["32", 0], "audio_features": ["31", 0], "audio_scale": 0.0, "audio_mode": "frame"}
    g["71"] = {"class_type": "FantasyTalkingApply", "inputs": {"model": ["70", 0], **apply}}  # LoRA, then Apply
    g["72"] = {"class_type": "FantasyTalkingApply", "inputs": {"model": ["7", 0], **apply}}   # Apply, no LoRA
    g["73"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["72", 0], "lora_name": MODEL_FILES["lora"][1],
                                                               "strength_model": 1.0}}          # Apply, then LoRA
    common = {"positive": ["8", 0], "negative": ["8", 1], "latent_image": ["8", 2], "seed": 7, "steps": 2,
              "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}
    ours = {**common, "cfg_text": 1.0, "cfg_audio": 1.0, "audio_guidance_start": 0.0, "audio_guidance_end": 1.0, "shift": 0.0}
    g["80"] = {"class_type": "KSampler", "inputs": {"model": ["70", 0], "cfg": 1.0, **common}}
    for key, model in (("81", "71"), ("82", "72"), ("83", "73")):
        g[key] = {"class_type": "FantasyTalkingSampler", "inputs": {"model": [model, 0], **ours}}
    for key in ("80", "81", "82", "83"):
        g["9" + key] = {"class_type": "SaveLatent", "inputs": {"samples": [key, 0], "filename_prefix": f"smoke/lora_{key}"}}
    return g


def check_lora(ctx: Context, outputs: dict) -> str:
    from safetensors.torch import load_file

    lat = {k: load_file(str(saved_files(ctx, outputs, "9" + k)[0]))["latent_tensor"].float() for k in ("80", "81", "82", "83")}
    core_lora, lora_apply, no_lora, apply_lora = (lat[k] for k in ("80", "81", "82", "83"))
    problems = [f"{name} differs from core KSampler with the LoRA by {(x - core_lora).abs().max():.3g}"
                for name, x in (("LoRA -> Apply", lora_apply), ("Apply -> LoRA", apply_lora))
                if not (x - core_lora).abs().max() <= 1e-5]
    if (no_lora - core_lora).abs().max() < 1e-3:
        problems.append("the LoRA changed nothing")
    if problems:
        raise SmokeFailure("; ".join(problems))
    return (f"LoRA -> Apply and Apply -> LoRA both equal KSampler with the LoRA (max diff "
            f"{max((lora_apply - core_lora).abs().max(), (apply_lora - core_lora).abs().max()):.1e}); "
            f"the LoRA moves the latent by {(no_lora - core_lora).abs().max():.2f}")


WORKFLOWS: list[Workflow] = [
    Workflow("core_wan_i2v", build_core_wan_i2v, check_core_wan_i2v, needs=("wan_dit", "wan_vae", "clip_l")),
    Workflow("core_audio_encoder", build_core_audio_encoder, check_core_audio_encoder,
             needs=("clip_l", "wan_vae", "wav2vec2")),
    Workflow("core_wan_i2v_clip_vision", build_core_wan_i2v_clip_vision, check_core_wan_i2v,
             needs=("wan_dit", "wan_vae", "clip_l", "clip_vision_h"), default=False),
    Workflow("pack_01_portrait_audio", *pack_workflow("01_portrait_audio_to_talking_video", PACK_SIZE.max_frames),
             needs=PACK_NEEDS),
    Workflow("pack_02_identity_motion", *pack_workflow("02_identity_and_motion_sliders", PACK_SIZE.max_frames),
             needs=PACK_NEEDS[:-1] + ("ft_adapters", "arcface")),
    Workflow("pack_03_long_audio", *pack_workflow("03_long_audio_one_pass", 0), needs=PACK_NEEDS),
    Workflow("pack_04_lip_mask", build_lip_mask, check_lip_mask),
    Workflow("pack_adapters_act", build_adapters_act, check_adapters_act, needs=("wan_dit", "wan_vae", "clip_l", "wav2vec2", "ft_ckpt")),
    Workflow("pack_adapters_act_fp8", build_adapters_act_fp8, check_adapters_act,
             needs=("wan_dit", "wan_vae", "clip_l", "wav2vec2", "ft_ckpt")),
    Workflow("pack_lora", build_lora, check_lora, needs=("wan_dit", "wan_vae", "clip_l", "wav2vec2", "ft_ckpt", "lora")),
]


# --------------------------------------------------------------------------------------- main


@dataclass
class Row:
    check: str
    ok: bool
    seconds: float
    detail: str


def print_table(rows: list[Row]) -> None:
    w = max(len(r.check) for r in rows)
    print(f"\n{'check':<{w}}  result  seconds  detail")
    print(f"{'-' * w}  ------  -------  {'-' * 40}")
    for r in rows:
        first, *rest = (r.detail or "").splitlines() or [""]
        print(f"{r.check:<{w}}  {'PASS' if r.ok else 'FAIL':<6}  {r.seconds:7.1f}  {first}")
        for line in rest:
            print(f"{'':<{w}}                   {line}")
    failed = sum(not r.ok for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed")


def check_pack_nodes(server: ComfyServer, python: str, comfyui: Path, pack: Path, object_info: dict) -> str:
    names = pack_node_names(python, comfyui, pack)
    served = {k for k, v in object_info.items() if str(v.get("python_module", "")).endswith(PACK_DIR_NAME)}
    missing = sorted(set(names) - set(object_info))
    if missing:
        raise SmokeFailure(f"{len(missing)} of {len(names)} pack nodes are not in /object_info: {missing}")
    extra = sorted(served - set(names))
    if extra:
        raise SmokeFailure(f"ComfyUI serves pack nodes that NODE_CLASS_MAPPINGS lacks: {extra}")
    log = server.log_path.read_text(errors="replace")
    if "IMPORT FAILED" in log and PACK_DIR_NAME in log.split("IMPORT FAILED", 1)[1].splitlines()[0]:
        raise SmokeFailure("ComfyUI reports IMPORT FAILED for the pack")
    return f"{len(names)} nodes registered" + (f" ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})" if names else
                                              " (the pack exports none yet)")


def run(args) -> int:
    comfyui = Path(args.comfyui).expanduser().resolve()
    if not (comfyui / "main.py").is_file():
        print(f"error: --comfyui / COMFYUI_PATH {comfyui} has no main.py; point it at a ComfyUI checkout", file=sys.stderr)
        return 2
    selected = [w for w in WORKFLOWS if (w.name in args.only if args.only else (w.default or args.all))]
    unknown = set(args.only or ()) - {w.name for w in WORKFLOWS}
    if unknown:
        print(f"error: unknown workflow(s) {sorted(unknown)}; known: {[w.name for w in WORKFLOWS]}", file=sys.stderr)
        return 2
    python = comfy_python(comfyui, args.python)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ft_comfy_smoke_"))
    base = work / "base"
    models_dir = Path(args.models_dir) if args.models_dir else base / "models"
    rows: list[Row] = []
    server = None
    try:
        t0 = time.monotonic()
        for sub in ("input", "output", "temp", "user", "custom_nodes"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        link = base / "custom_nodes" / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(Path(args.pack).resolve(), target_is_directory=True)
        kinds = sorted({k for w in selected for k in w.needs})
        paths = {k: ensure_model(k, models_dir) for k in kinds}
        if models_dir != base / "models":  # ComfyUI reads base/models: link the cache folders in
            for k, p in paths.items():
                dst = base / "models" / MODEL_FILES[k][0] / MODEL_FILES[k][1]
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    dst.symlink_to(p)
        make_portrait(base / "input" / "smoke_portrait.png")
        if not SPEECH_WAV.is_file():
            raise SmokeFailure(f"test audio {SPEECH_WAV} is missing (shared/fixtures must sit beside the repo)")
        shutil.copy(SPEECH_WAV, base / "input" / SPEECH_WAV.name)
        make_talking_video(base / "input" / "smoke_talking.mp4", base / "input" / "smoke_portrait.png")
        ctx = Context(base=base, models={k: MODEL_FILES[k][1] for k in kinds},
                      inputs={"image": "smoke_portrait.png", "audio": SPEECH_WAV.name, "video": "smoke_talking.mp4"})
        rows.append(Row("model files", True, time.monotonic() - t0,
                        ", ".join(f"{k} {p.stat().st_size / 2**20:.0f} MiB" for k, p in paths.items())))

        server = ComfyServer(comfyui, python, base, work / "comfyui.log")
        server.start(timeout=args.startup_timeout)
        rows.append(Row("server start", True, server.startup_s, f"{python} main.py --cpu on {server.url}"))
        t0 = time.monotonic()
        ctx.object_info = server.get("/object_info", timeout=120)
        try:
            detail = check_pack_nodes(server, python, comfyui, Path(args.pack), ctx.object_info)
            rows.append(Row("pack nodes in /object_info", True, time.monotonic() - t0, detail))
        except SmokeFailure as e:
            rows.append(Row("pack nodes in /object_info", False, time.monotonic() - t0, str(e)))
        for wf in selected:
            t0 = time.monotonic()
            try:
                outputs = server.run_prompt(wf.build(ctx), timeout=wf.timeout_s)
                rows.append(Row(f"workflow {wf.name}", True, time.monotonic() - t0, wf.check(ctx, outputs)))
            except SmokeFailure as e:
                rows.append(Row(f"workflow {wf.name}", False, time.monotonic() - t0, str(e)))
    except SmokeFailure as e:
        rows.append(Row("setup", False, 0.0, str(e)))
    except Exception as e:  # a bug or a broken environment: still stop the server and report
        import traceback

        rows.append(Row("setup", False, 0.0, "".join(traceback.format_exception(e)[-4:]).rstrip()))
    finally:
        if server is not None:
            server.stop()
    print_table(rows)
    failed = any(not r.ok for r in rows)
    if failed and server is not None:
        where = server.log_path if args.keep else "temp dir, removed; --keep DIR keeps it"
        print(f"\n---- last lines of the ComfyUI log ({where}) ----\n{server.log_tail()}")
    if args.keep:
        print(f"\nkept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (default $COMFYUI_PATH)")
    ap.add_argument("--python", help="ComfyUI's interpreter (default $COMFYUI_PYTHON, else $COMFYUI/.venv/bin/python)")
    ap.add_argument("--pack", default=str(PACK_ROOT), help="the pack folder linked into custom_nodes (default: this repo)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these workflows")
    ap.add_argument("--all", action="store_true", help="also run the heavy workflows (default=False ones)")
    ap.add_argument("--models-dir", help="keep the tiny model files here between runs (default: a temp dir)")
    ap.add_argument("--keep", help="use this work dir and keep it (server log, outputs) instead of a temp dir")
    ap.add_argument("--startup-timeout", type=float, default=300.0)
    ap.add_argument("--list", action="store_true", help="list the workflows and exit")
    args = ap.parse_args(argv)
    if args.list:
        for w in WORKFLOWS:
            print(f"{w.name}{'' if w.default else ' (with --all)'}: needs {', '.join(w.needs) or 'no model files'}")
        return 0
    if not args.comfyui:
        ap.error("give --comfyui or set COMFYUI_PATH to a ComfyUI checkout")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
