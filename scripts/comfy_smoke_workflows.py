"""The workflows scripts/comfyui_smoke.py runs in a real ComfyUI, and the checks of their outputs.

A :class:`Workflow` is one prompt (``build(ctx)`` -> API graph, ``check(ctx, outputs)`` -> detail)
or several (``run(ctx)`` posting them with ``ctx.prompt``). ``expect(ctx)`` gives, for a host that
cannot do what the workflow needs, the error the pack must answer with instead (an older ComfyUI:
the message must name the version needed). Checks raise :class:`SmokeFailure` with what is wrong.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable

from nodes.face import NO_PACK
from scripts import example_workflows as ew
from scripts.comfy_host import PACK_ROOT, SmokeFailure, run_from
from scripts.comfy_tiny_models import MODEL_FILES

SPEECH_WAV = PACK_ROOT / "assets" / "speech_en_16k.wav"


@dataclass
class Context:
    """What a workflow may use: file names as ComfyUI lists them, the dirs, and the host."""

    base: Path
    models: dict[str, str]  # kind -> name for the loader combo (e.g. "smoke_wan21_vae.safetensors")
    inputs: dict[str, str]  # "image", "audio", "video" -> name in the input dir
    object_info: dict = field(default_factory=dict)
    prompt: Callable[[dict], dict] | None = None  # post an API graph, wait, return /history outputs
    python: str = sys.executable  # the host's interpreter
    comfyui: Path | None = None
    pack: Path = PACK_ROOT
    gguf: bool = False  # ComfyUI-GGUF is installed and the GGUF files exist
    peak_rss_mib: Callable[[], float | None] = lambda: None  # the server's peak resident memory so far (Linux)

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    def declared(self, node: str) -> set[str]:
        spec = self.object_info.get(node, {}).get("input", {})
        return set(spec.get("required", {})) | set(spec.get("optional", {}))


@dataclass
class Workflow:
    name: str
    build: Callable[[Context], dict] | None = None  # -> API-format graph {"id": {"class_type", "inputs"}}
    check: Callable[[Context, dict], str] | None = None  # (ctx, history outputs) -> details
    needs: tuple[str, ...] = ()  # keys of MODEL_FILES
    run: Callable[[Context], str] | None = None  # several prompts instead of build + check
    expect: Callable[[Context], str | None] = lambda ctx: None  # regex of the refusal an older host must give
    default: bool = True  # False: only with --all or --only (heavy ones)
    gguf: bool = False  # needs --gguf


# ------------------------------------------------------------------------------------ inputs
LIP_VIDEO_FRAMES = 6


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


def make_two_people(path: Path, size: int = 256) -> Path:
    """Two faces side by side (the portrait and its mirror image), for the two-speaker template."""
    import numpy as np
    from PIL import Image

    one = np.asarray(Image.open(make_portrait(path.with_name("smoke_one_of_two.png"), size)).convert("RGB"))
    Image.fromarray(np.concatenate([one, one[:, ::-1]], axis=1)).save(path)
    return path


LONG_INPUTS = {"long_audio": ("smoke_speech_21s.wav", 3), "long_audio_62s": ("smoke_speech_62s.wav", 9),
               "speech_2s": ("smoke_speech_2s.wav", 0.3)}  # 07: each of two voices 2.06 s, 4.4 s in turns


DUB_VIDEO = {"name": "smoke_talking_20s.mp4", "seconds": 20.0, "fps": 25.0, "size": 128}


def make_dub_video(path: Path, portrait: Path) -> Path:
    """A 20 s source for the dub template: the portrait swaying at 25 fps (not the model's 23, so the
    dub retimes), 128 px (MediaPipe finds the face), with the speech sample as its own sound."""
    import numpy as np
    import soundfile
    from PIL import Image

    from fantasytalking_core.video import write_video

    d = DUB_VIDEO
    img = Image.open(portrait).convert("RGB").resize((d["size"] + 8, d["size"] + 8), Image.LANCZOS)
    arr = np.asarray(img)
    n = round(d["seconds"] * d["fps"])
    offsets = [(round(2 + 2 * np.sin(i / 7)), round(2 + 2 * np.cos(i / 11))) for i in range(n)]
    frames = np.stack([arr[y:y + d["size"], x:x + d["size"]] for x, y in offsets])
    wave, rate = soundfile.read(str(SPEECH_WAV), dtype="float32")
    path.unlink(missing_ok=True)
    return write_video(frames, path, d["fps"], np.tile(wave, 3)[: int(rate * d["seconds"])], rate)


DUB_TWO = {"name": "smoke_two_talking_3s.mp4", "seconds": 3.0, "fps": 25.0, "size": 128}


def make_two_people_video(path: Path, two_people: Path) -> Path:
    """A 3 s source with two faces side by side (256x128 at 25 fps, swaying a little) for the two-speaker
    dub: the two voices in turns outlast it, so fit hold holds its last frame."""
    import numpy as np
    from PIL import Image

    from fantasytalking_core.video import write_video

    d = DUB_TWO
    img = Image.open(two_people).convert("RGB").resize((2 * d["size"] + 8, d["size"] + 8), Image.LANCZOS)
    arr = np.asarray(img)
    n = round(d["seconds"] * d["fps"])
    offsets = [(round(2 + 2 * np.sin(i / 7)), round(2 + 2 * np.cos(i / 11))) for i in range(n)]
    frames = np.stack([arr[y:y + d["size"], x:x + 2 * d["size"]] for x, y in offsets])
    path.unlink(missing_ok=True)
    return write_video(frames, path, d["fps"])


def make_long_speech(path: Path, repeats: float) -> Path:
    """The speech sample said `repeats` times in a row (3: 20.6 s, 9: 61.9 s), for the long-audio template;
    below 1, its first part (0.3: 2.06 s)."""
    import math

    import numpy as np
    import soundfile

    wave, rate = soundfile.read(str(SPEECH_WAV), dtype="float32")
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.tile(wave, math.ceil(repeats))[: int(len(wave) * repeats)], rate, subtype="PCM_16")
    return path


def make_talking_video(path: Path, portrait: Path) -> Path:
    """A short mp4 of the portrait drifting, with the speech asset, for LoadVideo."""
    import numpy as np
    import soundfile
    from PIL import Image

    from fantasytalking_core.video import write_video

    img = np.asarray(Image.open(portrait).convert("RGB"))
    frames = np.stack([np.roll(img, (i, i // 2), axis=(0, 1)) for i in range(LIP_VIDEO_FRAMES)])
    wave, rate = soundfile.read(str(SPEECH_WAV), dtype="float32")
    path.unlink(missing_ok=True)
    return write_video(frames, path, 23, wave[: int(rate * LIP_VIDEO_FRAMES / 23)], rate)


# ------------------------------------------------------------------------------------ outputs
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


def latent(ctx: Context, outputs: dict, node_id: str):
    from safetensors.torch import load_file

    return load_file(str(saved_files(ctx, outputs, node_id)[0]))["latent_tensor"].float()


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


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
            info["audio_s"] = sum(f.samples for f in c.decode(audio=0)) / a.rate
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


def speech_frames(cap: int, fixed: int = 0) -> int:
    """The frame count FantasyTalking Audio Encode gives the speech asset (``frames``/``max_frames``)."""
    import soundfile

    from fantasytalking_core.frames import plan_frames

    return plan_frames(soundfile.info(str(SPEECH_WAV)).duration, 23.0, fixed, cap)[0]


# ------------------------------------------------------------------------------------ core only
# The core-only I2V graph: the same loaders, conditioning and save nodes a FantasyTalking graph
# uses, so a failure here is in the host setup, not in the pack.
CORE_I2V = {"width": 64, "height": 48, "length": 9, "fps": 23.0, "steps": 2}
WAN_NEEDS = ("wan_dit", "wan_vae", "clip_l")


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
    from fantasytalking_core.frames import latent_frames

    c = CORE_I2V
    got = tuple(latent(ctx, outputs, "23").shape)
    want = (1, 16, latent_frames(c["length"]), c["height"] // 8, c["width"] // 8)
    if got != want:
        raise SmokeFailure(f"latent_tensor shape {got}, expected {want}")
    return f"wav2vec2 loaded and encoded; latent {list(got)}"


# ------------------------------------------------------------------- the pack's example workflows
# The graphs of example_workflows/ (scripts/example_workflows.py), with the tiny files swapped in;
# whatever api_graphs() returns is run.
PACK_SIZE = ew.Size(width=16, height=16, steps=2, max_frames=17)  # small: the VAE has its real width
LOADER_KINDS = {"UNETLoader": "wan_dit", "VAELoader": "wan_vae", "CLIPLoader": "clip_l", "LoraLoaderModelOnly": "lora",
                "FantasyTalkingWav2VecLoader": "wav2vec2", "FantasyTalkingFaceEmbed": "arcface",
                "CLIPVisionLoader": "clip_vision_h"}


def _pack_files(ctx: Context) -> ew.Files:
    tiny = {"wan": ctx.models.get("wan_dit", MODEL_FILES["wan_dit"][1]), "fantasytalking": MODEL_FILES["ft_ckpt"][1],
            "adapters_with_identity": MODEL_FILES["ft_adapters"][1], "wav2vec": MODEL_FILES["wav2vec2"][1],
            "vae": MODEL_FILES["wan_vae"][1], "text_encoder": MODEL_FILES["clip_l"][1], "text_encoder_type": "sd3",
            "clip_vision": None, "image": ctx.inputs["image"], "audio": ctx.inputs["audio"],
            "image_two": ctx.inputs.get("two_people", ""), "audio_2": ctx.inputs["audio"],
            "video": ctx.inputs.get("video", ""), "insightface_pack": "smoke_pack"}
    names = {f.name for f in fields(ew.Files)}
    tiny.update({n: MODEL_FILES["lora"][1] for n in names if "lora" in n})  # e.g. a distill LoRA's file
    return replace(ew.Files(), **{k: v for k, v in tiny.items() if k in names})


def _graph_needs(graph: dict) -> tuple[str, ...]:
    kinds = {LOADER_KINDS[n["class_type"]] for n in graph.values() if n["class_type"] in LOADER_KINDS
             and n["inputs"].get("insightface_pack") != NO_PACK}  # Face Embed without a pack: the crop only
    for n in graph.values():
        if n["class_type"] == "FantasyTalkingModelLoader":
            kinds.add("ft_adapters" if n["inputs"]["model_name"] == MODEL_FILES["ft_adapters"][1] else "ft_ckpt")
    return tuple(sorted(kinds))


def _windows_supported(ctx: Context) -> bool:
    """The host's Wan context windows cut the I2V start image per window (they have retain_first_frame)."""
    return "retain_first_frame" in ctx.declared("WanContextWindowsManual")


WINDOWS_REFUSAL = r"cuts the video into context windows .* needs a ComfyUI released after November 2025"


def _expect_for(graph: dict) -> Callable[[Context], str | None]:
    windows = any(n["class_type"] == "WanContextWindowsManual" for n in graph.values())
    return lambda ctx: WINDOWS_REFUSAL if windows and not _windows_supported(ctx) else None


LONG_NODES = ("FantasyTalkingLongVideoSampler", "FantasyTalkingLongVideoToFile")
DUB_NODES = ("FantasyTalkingDubSampler", "FantasyTalkingDubToFile")
FILE_NODES = ("FantasyTalkingLongVideoToFile", "FantasyTalkingDubToFile")


def _is_long(graph: dict) -> bool:
    return any(n["class_type"] in LONG_NODES for n in graph.values())


def node_file(ctx: Context, outputs: dict, node_id: str) -> Path:
    """The one file a node showed in its UI (output or temp folder)."""
    items = outputs.get(node_id, {}).get("images", [])
    if len(items) != 1:
        raise SmokeFailure(f"node {node_id} showed {len(items)} files, expected its video: {json.dumps(outputs)[:600]}")
    i = items[0]
    path = ctx.base / i["type"] / i.get("subfolder", "") / i["filename"]
    if not path.is_file():
        raise SmokeFailure(f"node {node_id} showed {path}, which does not exist")
    return path


def packets(path: Path) -> dict[str, list[bytes]]:
    """Every packet's bytes per stream type (the encoded streams, whatever the container)."""
    import av

    out: dict[str, list[bytes]] = {"video": [], "audio": []}
    with av.open(str(path)) as c:
        for packet in c.demux():
            if packet.size and packet.stream.type in out:
                out[packet.stream.type].append(bytes(packet))
    return out


def check_file_node(ctx: Context, outputs: dict, graph: dict, saved: Path) -> str:
    """A (to file) node's own mp4: H.264 yuv420p + AAC, both streams of the video's length, with every
    packet of its streams in Save Video's file unchanged (a remux, no re-encode)."""
    from fantasytalking_core.video import probe

    key = next(k for k, n in graph.items() if n["class_type"] in FILE_NODES)
    mine = node_file(ctx, outputs, key)
    info = probe(mine)
    v, a = info["video"], info["audio"]
    if (v["codec"], v["pix_fmt"], a and a["codec"]) != ("h264", "yuv420p", "aac"):
        raise SmokeFailure(f"{mine.name}: {v['codec']} {v['pix_fmt']} + {a and a['codec']}, expected h264 yuv420p + aac")
    if abs(a["duration"] - v["duration"]) > 0.5 / v["fps"] or abs(v["duration"] - v["frames"] / v["fps"]) > 1e-3:
        raise SmokeFailure(f"{mine.name}: video {v['duration']:.3f} s ({v['frames']} frames), audio {a['duration']:.3f} s")
    ours, theirs = packets(mine), packets(saved)
    for kind in ("video", "audio"):
        if ours[kind] != theirs[kind]:
            raise SmokeFailure(f"{saved.name}'s {kind} packets differ from {mine.name}'s ({len(theirs[kind])} vs "
                               f"{len(ours[kind])}): Save Video re-encoded the node's file")
    return (f"node file {mine.parent.name}/{mine.name}: {v['frames']} frames, video {v['duration']:.3f} s, audio "
            f"{a['duration']:.3f} s; Save Video has its {len(ours['video'])} video and {len(ours['audio'])} audio "
            f"packets byte for byte")


def _speakers_seconds(ctx: Context, graph: dict) -> float | None:
    """Several speakers in turns (07): the recordings one after the other with the gaps between."""
    import soundfile

    spk = next((n["inputs"] for n in graph.values() if n["class_type"] == "FantasyTalkingSpeakers"), None)
    if spk is None:
        return None
    files = [graph[spk[k][0]]["inputs"]["audio"] for k in ("audio_1", "audio_2", "audio_3", "audio_4") if k in spk]
    return sum(soundfile.info(str(ctx.base / "input" / f)).duration for f in files) + spk["gap"] * (len(files) - 1)


def check_long_video(ctx: Context, video: Path, audio: str, seconds: float | None = None) -> str:
    """The whole recording as video: ceil(seconds * 23) frames; the streams as the file declares them (its
    edit list: AAC priming and padding excluded) end within half a frame of each other. `seconds`: the
    recording's length when it is not the file `audio` (several speakers)."""
    import soundfile

    from fantasytalking_core.frames import plan_frames
    from fantasytalking_core.segments import output_frames, plan_segments
    from fantasytalking_core.video import probe

    seconds = soundfile.info(str(ctx.base / "input" / audio)).duration if seconds is None else seconds
    frames = output_frames(seconds, 23.0)
    check_video(video, frames=frames, fps=23.0, width=PACK_SIZE.width, height=PACK_SIZE.height, audio=True)
    info = probe(video)
    v, a = info["video"]["duration"], info["audio"]["duration"]
    if abs(a - v) > 0.5 / 23.0 or not 0 <= v - seconds < 1 / 23.0:
        raise SmokeFailure(f"{video.name}: audio {a:.3f} s, video {v:.3f} s for a {seconds:.3f} s recording")
    total, _ = plan_frames(seconds, 23.0, 0, 0)
    peak = ctx.peak_rss_mib()
    return (f"{video.name}: {frames} frames {PACK_SIZE.width}x{PACK_SIZE.height} @ 23 fps for a {seconds:.2f} s "
            f"recording ({len(plan_segments(total, 81, 1))} segments); video {v:.3f} s, audio {a:.3f} s"
            + (f"; server peak RSS {peak:.0f} MiB" if peak else ""))


def _is_dub(graph: dict) -> bool:
    return any(n["class_type"] in DUB_NODES for n in graph.values())


def check_dub_video(ctx: Context, video: Path, audio: str, graph: dict) -> str:
    """The dub keeps the source's frame rate and size and its length follows fit (06, fit cut: the 20.6 s
    speech cut to the 20 s video; two speakers, fit hold: the voices in turns, the last frame held);
    both streams end together; outside the mouth masks (every speaker's) the frames are the source's
    (up to the two H.264 encodes), inside they changed (each speaker's half, with two)."""
    import math

    import numpy as np
    import soundfile

    from fantasytalking_core.dub import mouth_masks, plan_dub
    from fantasytalking_core.video import probe, read_video

    name = next(n["inputs"]["file"] for n in graph.values() if n["class_type"] == "LoadVideo")
    source = read_video(ctx.base / "input" / name)
    n, fps, (h, w) = len(source.frames), source.fps, source.frames.shape[1:3]
    dub = next(node["inputs"] for node in graph.values() if node["class_type"] in DUB_NODES)
    seconds = _speakers_seconds(ctx, graph) or soundfile.info(str(ctx.base / "input" / audio)).duration
    plan = plan_dub(n, fps, seconds, dub["fit"])
    detail = check_video(video, frames=plan.frames, fps=fps, width=w, height=h, audio=True)
    info = probe(video)
    v, a = info["video"]["duration"], info["audio"]["duration"]
    if abs(a - v) > 0.5 / fps or abs(v - plan.frames / fps) > 1e-3:
        raise SmokeFailure(f"{video.name}: audio {a:.3f} s, video {v:.3f} s for {plan.frames / fps:.3f} s (fit "
                           f"{dub['fit']}, a {n / fps:.3f} s source, {seconds:.3f} s of audio)")
    m = next(node["inputs"] for node in graph.values() if node["class_type"] == "FantasyTalkingDubMask")
    faces = m.get("faces", 1)
    masks = mouth_masks(source.frames, m["dilation"], m["jaw"], m["feather"], faces=faces).soft().numpy()
    masks = masks[plan.out_source.numpy()]
    out = read_video(video).frames.astype(np.float32) / 255
    src = source.frames[plan.out_source.numpy()].astype(np.float32) / 255
    outside, inside = masks == 0, masks > 0.5
    mse = float(((out - src) ** 2)[outside].mean())
    db = math.inf if mse == 0 else 10 * math.log10(1 / mse)
    halves = [inside] if faces == 1 else [inside & (np.arange(w) < w // 2), inside & (np.arange(w) >= w // 2)]
    changed = [float(np.abs(out - src)[part].mean()) for part in halves]
    if db < 30 or min(changed) < 0.02:
        raise SmokeFailure(f"{video.name}: PSNR outside the mask {db:.1f} dB (want >= 30), mean change inside "
                           f"{', '.join(f'{c:.3f}' for c in changed)} (want >= 0.02)")
    peak = ctx.peak_rss_mib()
    return (f"{detail}; {seconds:.2f} s of speech on a {n / fps:.2f} s source (fit {dub['fit']}), video {v:.3f} s, "
            f"audio {a:.3f} s; PSNR outside the mask {db:.1f} dB (H.264 twice), mean |change| inside "
            f"{' and '.join(f'{c:.3f}' for c in changed)}" + (f"; server peak RSS {peak:.0f} MiB" if peak else ""))


def two_speaker_dub(graph: dict) -> None:
    """06 with two people: two voices in turns (FantasyTalking Speakers, regions found on the source's first
    frame by Speaker Regions) in place of the one audio, every speaker's mouth in the Dub Mask, fit hold."""
    graph["audio_2"] = {"class_type": "LoadAudio", "inputs": {"audio": graph["audio"]["inputs"]["audio"]}}
    graph["regions"] = {"class_type": "FantasyTalkingSpeakerRegions", "inputs": {
        "image": ["parts", 0], "speakers": 2, "grow": 1.0, "feather": 8}}  # its first frame
    graph["speakers"] = {"class_type": "FantasyTalkingSpeakers", "inputs": {
        "wav2vec": ["w2v", 0], "audio_1": ["audio", 0], "audio_2": ["audio_2", 0], "timing": "turns", "gap": 0.3,
        "schedule": "0-3.2:1, 3.2-7.5:2", "fps": 23.0, "frames": 0, "max_frames": 0, "regions": ["regions", 0],
        "region_guidance": False}}
    graph["mask"]["inputs"]["faces"] = 2
    dub = graph["dub"]["inputs"]
    del dub["audio"]
    dub.update(speakers=["speakers", 0], fit="hold")


def trained_adapters(graph: dict) -> None:
    """What template 02's note tells users with identity and motion weights to pick: our adapter file
    (identity and motion modules) in the loader, an insightface pack in Face Embed."""
    for node in graph.values():
        if node["class_type"] == "FantasyTalkingModelLoader":
            node["inputs"]["model_name"] = MODEL_FILES["ft_adapters"][1]
        if node["class_type"] == "FantasyTalkingFaceEmbed":
            node["inputs"]["insightface_pack"] = "smoke_pack"


def pack_workflow(name: str, audio: str = "audio", default: bool = True,
                  variant: Callable[[dict], None] | None = None, suffix: str = "") -> Workflow:
    """A template as a workflow; a long-audio template runs on the `audio` input (a long recording);
    ``variant`` changes the graph in place (a row named with ``suffix``)."""
    run_name = f"pack_{name}" + ("" if audio in ("audio", "long_audio", "speech_2s") else f"_{audio.rsplit('_', 1)[1]}") + suffix

    def build(ctx: Context) -> dict:
        g = ew.api_graphs(_pack_files(ctx), PACK_SIZE)[name]
        if variant is not None:
            variant(g)
        for node in g.values():
            if node["class_type"] == "SaveVideo":
                node["inputs"]["filename_prefix"] = f"smoke/{run_name[5:]}"
            if node["class_type"] == "LoadAudio" and (_is_long(g) or _is_dub(g)):
                node["inputs"]["audio"] = ctx.inputs.get(audio, ctx.inputs["audio"])
            if node["class_type"] == "LoadVideo" and _is_dub(g):
                two = "speakers" in g["dub"]["inputs"]
                node["inputs"]["file"] = DUB_TWO["name"] if two else ctx.inputs.get("dub_video", DUB_VIDEO["name"])
            if node["class_type"] == "WanContextWindowsManual":  # inputs this host declares
                node["inputs"] = {k: v for k, v in node["inputs"].items() if k in ctx.declared("WanContextWindowsManual")}
        return g

    def check(ctx: Context, outputs: dict) -> str:
        g = build(ctx)
        saves = [k for k, n in g.items() if n["class_type"] == "SaveVideo"]
        if not saves:  # a preview graph: every preview node gave images
            counts = {k: len(outputs.get(k, {}).get("images", [])) for k, n in g.items() if n["class_type"] == "PreviewImage"}
            if not counts or min(counts.values()) == 0:
                raise SmokeFailure(f"preview nodes gave no images: {counts}")
            return "preview images: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        to_file = any(n["class_type"] in FILE_NODES for n in g.values())
        if _is_long(g) or _is_dub(g):
            (video,) = saved_files(ctx, outputs, saves[0])
            audio_name = ctx.inputs.get(audio, ctx.inputs["audio"])
            if _is_long(g):
                detail = check_long_video(ctx, video, audio_name, _speakers_seconds(ctx, g))
            else:
                detail = check_dub_video(ctx, video, audio_name, g)
            previews = [k for k, n in g.items() if n["class_type"] == "PreviewImage"]
            empty = [k for k in previews if not outputs.get(k, {}).get("images")]
            if empty:
                raise SmokeFailure(f"preview nodes {empty} produced no image")
            return (detail + (f"; previews {', '.join(previews)}" if previews else "")
                    + ("; " + check_file_node(ctx, outputs, g, video) if to_file else ""))
        enc = next(n["inputs"] for n in g.values() if n["class_type"] == "FantasyTalkingAudioEncode")
        frames = speech_frames(enc["max_frames"], enc["frames"])
        (video,) = saved_files(ctx, outputs, saves[0])
        detail = check_video(video, frames=frames, fps=23.0, width=PACK_SIZE.width, height=PACK_SIZE.height, audio=True)
        info = probe_video(video)
        if abs(info["audio_s"] - frames / 23.0) > 0.05:  # the audio was cut to the video
            raise SmokeFailure(f"{video.name}: audio {info['audio_s']:.3f} s for {frames / 23.0:.3f} s of video")
        for k, n in g.items():
            if n["class_type"] == "PreviewImage" and not outputs.get(k, {}).get("images"):
                raise SmokeFailure(f"preview node {k} produced no image")
        return detail

    graph = ew.api_graphs(_pack_files(Context(Path("."), {}, {"image": "", "audio": ""})), PACK_SIZE)[name]
    if variant is not None:
        variant(graph)
    return Workflow(run_name, build, check, needs=_graph_needs(graph), expect=_expect_for(graph), default=default)


# ------------------------------------------------------------------- the pack in the real host
FT_NEEDS = WAN_NEEDS + ("wav2vec2", "ft_ckpt")


def ft_base(ctx: Context, frames: int = 9, max_frames: int = 81) -> dict:
    """Inputs, conditioning and the FantasyTalking loaders; the video length follows the audio encode."""
    g = {k: v for k, v in build_core_wan_i2v(ctx).items() if k not in ("9", "10", "11", "12")}
    g["8"]["inputs"]["length"] = ["31", 1]
    g["30"] = {"class_type": "FantasyTalkingWav2VecLoader", "inputs": {"model_name": MODEL_FILES["wav2vec2"][1], "device": "cpu"}}
    g["31"] = {"class_type": "FantasyTalkingAudioEncode", "inputs": {
        "audio": ["2", 0], "wav2vec": ["30", 0], "fps": 23.0, "frames": frames, "max_frames": max_frames}}
    g["32"] = {"class_type": "FantasyTalkingModelLoader", "inputs": {"model_name": MODEL_FILES["ft_ckpt"][1], "precision": "fp32"}}
    return g


def apply_node(model: list, scale: float = 1.0) -> dict:
    return {"class_type": "FantasyTalkingApply", "inputs": {"model": model, "fantasytalking_model": ["32", 0],
                                                            "audio_features": ["31", 0], "audio_scale": scale,
                                                            "audio_mode": "frame"}}


COMMON = {"positive": ["8", 0], "negative": ["8", 1], "latent_image": ["8", 2], "seed": 7, "steps": 2,
          "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}


def ft_sampler(model: list, cfg_text: float = 1.0, cfg_audio: float = 1.0, shift: float = 0.0) -> dict:
    return {"class_type": "FantasyTalkingSampler", "inputs": {
        "model": model, "cfg_text": cfg_text, "cfg_audio": cfg_audio, "audio_guidance_start": 0.0,
        "audio_guidance_end": 1.0, "shift": shift, **COMMON}}


def save_latent(src: str, prefix: str) -> dict:
    return {"class_type": "SaveLatent", "inputs": {"samples": [src, 0], "filename_prefix": f"smoke/{prefix}"}}


def build_adapters_act(ctx: Context) -> dict:
    """One prompt, five latents from the same inputs: core's KSampler on the plain model; our
    sampler (cfg 1/1, one pass) with audio_scale 0 and 1; our sampler and our Guider +
    SamplerCustomAdvanced with cfg_text 5 / cfg_audio 5 (three passes through core's batching)."""
    g = ft_base(ctx)
    g["33"], g["34"] = apply_node(["7", 0], 0.0), apply_node(["7", 0], 1.0)
    g["40"] = {"class_type": "KSampler", "inputs": {"model": ["7", 0], "cfg": 1.0, **COMMON}}
    g["41"], g["42"] = ft_sampler(["33", 0]), ft_sampler(["34", 0])
    g["43"] = ft_sampler(["34", 0], 5.0, 5.0)
    g["50"] = {"class_type": "FantasyTalkingGuider", "inputs": {
        "model": ["34", 0], "positive": ["8", 0], "negative": ["8", 1], "cfg_text": 5.0, "cfg_audio": 5.0,
        "audio_guidance_start": 0.0, "audio_guidance_end": 1.0}}
    g["51"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}}
    g["52"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    g["53"] = {"class_type": "BasicScheduler", "inputs": {"model": ["34", 0], "scheduler": "simple", "steps": 2, "denoise": 1.0}}
    g["54"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["51", 0], "guider": ["50", 0], "sampler": ["52", 0], "sigmas": ["53", 0], "latent_image": ["8", 2]}}
    for key in ("40", "41", "42", "43", "54"):
        g["6" + key] = save_latent(key, f"act_{key}")
    return g


def build_adapters_act_fp8(ctx: Context) -> dict:
    """The same checks on the DiT loaded by UNETLoader as fp8_e4m3fn (core's fp8 weight casting)."""
    g = build_adapters_act(ctx)
    g["7"]["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    for node in g.values():
        if node["class_type"] == "SaveLatent":
            node["inputs"]["filename_prefix"] = node["inputs"]["filename_prefix"].replace("act_", "act_fp8_")
    return g


def check_adapters_act(ctx: Context, outputs: dict) -> str:
    core, off, on, guided, custom = (latent(ctx, outputs, "6" + k) for k in ("40", "41", "42", "43", "54"))
    problems = []
    if max_diff(off, core) > 1e-5:
        problems.append(f"audio_scale 0 differs from core KSampler by {max_diff(off, core):.3g}")
    if max_diff(on, off) < 1e-3:
        problems.append("audio_scale 1 gives the same latent as audio_scale 0: the adapters did not act")
    if max_diff(guided, custom) > 1e-5:
        problems.append(f"FantasyTalkingSampler and Guider+SamplerCustomAdvanced differ by {max_diff(guided, custom):.3g}")
    if max_diff(guided, on) < 1e-3:
        problems.append("cfg 5/5 gives the cfg 1/1 latent: guidance did nothing")
    if problems:
        raise SmokeFailure("; ".join(problems))
    return (f"scale 0 = KSampler (max diff {max_diff(off, core):.1e}); scale 1 moves it by {max_diff(on, off):.2f}; "
            f"Sampler = Guider+SamplerCustomAdvanced (max diff {max_diff(guided, custom):.1e})")


def motion_node(omega_l: float, omega_b: float) -> dict:
    return {"class_type": "FantasyTalkingMotionIntensity", "inputs": {"omega_l": omega_l, "omega_b": omega_b}}


def build_motion_controls(ctx: Context) -> dict:
    """The motion sliders with the released layout (audio only: the training-free controls), one
    prompt: Apply without motion, with neutral sliders, with omega_b 1 (the I2V conditioning's motion
    amplitude, core's OUTER_SAMPLE wrapper on core's own conds) and omega_l 1 (the audio strength),
    through FantasyTalking Sampler (cfg 5/5) and core's KSampler."""
    g = ft_base(ctx)
    for key, (wl, wb) in (("84", (0.5, 0.5)), ("85", (0.5, 1.0)), ("86", (1.0, 0.5))):
        g[key] = motion_node(wl, wb)
    g["33"] = apply_node(["7", 0])
    for key, motion in (("34", "84"), ("35", "85"), ("36", "86")):
        g[key] = apply_node(["7", 0])
        g[key]["inputs"]["motion"] = [motion, 0]
    for key, model in (("43", "33"), ("44", "34"), ("45", "35"), ("46", "36")):
        g[key] = ft_sampler([model, 0], 5.0, 5.0)
    g["47"] = {"class_type": "KSampler", "inputs": {"model": ["33", 0], "cfg": 1.0, **COMMON}}
    g["48"] = {"class_type": "KSampler", "inputs": {"model": ["35", 0], "cfg": 1.0, **COMMON}}
    for key in ("43", "44", "45", "46", "47", "48"):
        g["6" + key] = save_latent(key, f"motion_{key}")
    return g


def check_motion_controls(ctx: Context, outputs: dict) -> str:
    plain, neutral, body, face, core_plain, core_body = (latent(ctx, outputs, "6" + k)
                                                         for k in ("43", "44", "45", "46", "47", "48"))
    problems = []
    if not torch_equal(neutral, plain):
        problems.append(f"neutral sliders differ from no motion by {max_diff(neutral, plain):.3g} (must be bit for bit)")
    for name, a, b in (("omega_b 1 (FantasyTalking Sampler)", body, plain), ("omega_l 1", face, plain),
                       ("omega_b 1 (core KSampler)", core_body, core_plain)):
        if max_diff(a, b) < 1e-3:
            problems.append(f"{name} gives the neutral latent: the control did not act")
    if problems:
        raise SmokeFailure("; ".join(problems))
    return (f"audio-only weights: neutral sliders = no motion bit for bit; omega_b 1 moves the latent by "
            f"{max_diff(body, plain):.2f} (core KSampler {max_diff(core_body, core_plain):.2f}), omega_l 1 by "
            f"{max_diff(face, plain):.2f}")


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def build_lora(ctx: Context) -> dict:
    """Core's LoraLoaderModelOnly before and after FantasyTalking Apply: the LoRA must reach the
    modules Apply patches (cross_attn.o) as well as the others, in either order."""
    g = ft_base(ctx)
    lora = {"lora_name": MODEL_FILES["lora"][1], "strength_model": 1.0}
    g["70"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["7", 0], **lora}}
    g["71"], g["72"] = apply_node(["70", 0], 0.0), apply_node(["7", 0], 0.0)  # LoRA -> Apply; Apply alone
    g["73"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["72", 0], **lora}}  # Apply -> LoRA
    g["80"] = {"class_type": "KSampler", "inputs": {"model": ["70", 0], "cfg": 1.0, **COMMON}}
    for key, model in (("81", "71"), ("82", "72"), ("83", "73")):
        g[key] = ft_sampler([model, 0])
    for key in ("80", "81", "82", "83"):
        g["9" + key] = save_latent(key, f"lora_{key}")
    return g


def check_lora(ctx: Context, outputs: dict) -> str:
    core_lora, lora_apply, no_lora, apply_lora = (latent(ctx, outputs, "9" + k) for k in ("80", "81", "82", "83"))
    problems = [f"{name} differs from core KSampler with the LoRA by {max_diff(x, core_lora):.3g}"
                for name, x in (("LoRA -> Apply", lora_apply), ("Apply -> LoRA", apply_lora)) if max_diff(x, core_lora) > 1e-5]
    if max_diff(no_lora, core_lora) < 1e-3:
        problems.append("the LoRA changed nothing")
    if problems:
        raise SmokeFailure("; ".join(problems))
    return (f"LoRA -> Apply and Apply -> LoRA both equal KSampler with the LoRA (max diff "
            f"{max(max_diff(lora_apply, core_lora), max_diff(apply_lora, core_lora)):.1e}); "
            f"the LoRA moves the latent by {max_diff(no_lora, core_lora):.2f}")


WINDOWS_SIZE = 16


def build_context_windows(ctx: Context) -> dict:
    """The whole speech asset (161 frames, 41 latent) through core's Wan context windows 33/8,
    retain_first_frame off and on, plus audio_scale 0, as latents (core pads nothing: the audio
    of each window comes from the window object)."""
    g = ft_base(ctx, frames=0, max_frames=0)
    g["8"]["inputs"].update(width=WINDOWS_SIZE, height=WINDOWS_SIZE)  # 161 frames through the real-width VAE
    g["33"], g["34"] = apply_node(["7", 0], 1.0), apply_node(["7", 0], 0.0)
    windows = {"context_length": 33, "context_overlap": 8, "context_schedule": "standard_static", "context_stride": 1,
               "closed_loop": False, "fuse_method": "pyramid", "freenoise": False, "split_conds_to_windows": False}
    declared = ctx.declared("WanContextWindowsManual")
    g["38"] = motion_node(0.5, 1.0)  # the motion amplitude with the released layout (training-free)
    g["39"] = apply_node(["7", 0], 1.0)
    g["39"]["inputs"]["motion"] = ["38", 0]
    for key, model, retain in (("35", "33", False), ("36", "33", True), ("37", "34", False), ("40", "39", False)):
        inputs = {k: v for k, v in {**windows, "retain_first_frame": retain, "model": [model, 0]}.items()
                  if k in declared or not declared}
        g[key] = {"class_type": "WanContextWindowsManual", "inputs": inputs}
    for key, model in (("45", "35"), ("46", "36"), ("47", "37"), ("48", "40")):
        g[key] = ft_sampler([model, 0])
        g["6" + key] = save_latent(key, f"windows_{key}")
    return g


def check_context_windows(ctx: Context, outputs: dict) -> str:
    from fantasytalking_core.frames import latent_frames

    on, retained, off, moved = (latent(ctx, outputs, "6" + k) for k in ("45", "46", "47", "48"))
    frames = speech_frames(0)
    want = (1, 16, latent_frames(frames), WINDOWS_SIZE // 8, WINDOWS_SIZE // 8)
    problems = [f"{n} latent is {tuple(x.shape)}, expected {want}" for n, x in (("audio", on), ("retain", retained))
                if tuple(x.shape) != want]
    if not all(bool(x.isfinite().all()) for x in (on, retained, off)):
        problems.append("a latent is not finite")
    if not problems and max_diff(on, off) < 1e-3:
        problems.append("audio_scale 1 gives the audio_scale 0 latent under context windows: the audio did not act")
    if not problems and max_diff(on, retained) == 0:
        problems.append("retain_first_frame changed nothing")
    if not problems and max_diff(on, moved) < 1e-3:
        problems.append("omega_b 1 (the I2V motion amplitude) changed nothing under context windows")
    if problems:
        raise SmokeFailure("; ".join(problems))
    return (f"{frames} frames ({want[2]} latent) in windows of 9 latent frames: the audio moves the latent by "
            f"{max_diff(on, off):.2f}; retain_first_frame on moves it by {max_diff(on, retained):.2f}; omega_b 1 "
            f"(motion amplitude) by {max_diff(on, moved):.2f}")


# ------------------------------------------------------------------- checks inside the host's Python
def run_host_checks(ctx: Context) -> str:
    """scripts/comfy_host_checks.py in the host's interpreter: memory management of the adapter
    weights (core's ops and patcher, the --lowvram cast path) and the multi-GPU clone path."""
    r = subprocess.run(**run_from(ctx.comfyui, ctx.python, "scripts.comfy_host_checks", "--comfyui", str(ctx.comfyui),
                                 "--pack", str(ctx.pack), "--models", str(ctx.base / "models")),
                       capture_output=True, text=True, timeout=600)
    lines = [ln[7:] for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        raise SmokeFailure(f"host checks failed (code {r.returncode}): " + " | ".join(lines) + "\n" + r.stderr[-2000:])
    return "\n".join(lines)


WORKFLOWS: list[Workflow] = [
    Workflow("core_wan_i2v", build_core_wan_i2v, check_core_wan_i2v, needs=WAN_NEEDS),
    Workflow("core_audio_encoder", build_core_audio_encoder, check_core_audio_encoder,
             needs=("clip_l", "wan_vae", "wav2vec2")),
    Workflow("core_wan_i2v_clip_vision", build_core_wan_i2v_clip_vision, check_core_wan_i2v,
             needs=WAN_NEEDS + ("clip_vision_h",), default=False),
    *(pack_workflow(name, "long_audio" if name in ("03_long_audio", "06_dub_video") else
                    "speech_2s" if name == "07_two_speakers" else "audio")
      for name in ew.api_graphs()),
    pack_workflow("03_long_audio", "long_audio_62s", default=False),  # the 60 s, with --all or --only
    pack_workflow("02_identity_and_motion_sliders", variant=trained_adapters, suffix="_trained"),
    pack_workflow("06_dub_video", "speech_2s", variant=two_speaker_dub, suffix="_two_speakers"),
    Workflow("pack_motion_controls", build_motion_controls, check_motion_controls, needs=FT_NEEDS),
    Workflow("pack_adapters_act", build_adapters_act, check_adapters_act, needs=FT_NEEDS),
    Workflow("pack_adapters_act_fp8", build_adapters_act_fp8, check_adapters_act, needs=FT_NEEDS),
    Workflow("pack_lora", build_lora, check_lora, needs=FT_NEEDS + ("lora",)),
    Workflow("pack_context_windows", build_context_windows, check_context_windows, needs=FT_NEEDS,
             expect=lambda ctx: None if _windows_supported(ctx) else WINDOWS_REFUSAL),
    Workflow("host_checks", run=run_host_checks, needs=FT_NEEDS),
]


def expected_refusal(pattern: str | None, error: str) -> bool:
    return pattern is not None and re.search(pattern, error, re.S) is not None
