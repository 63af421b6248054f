"""The example workflows, written once as API-format graphs and exported in ComfyUI's UI format.

    python -m scripts.example_workflows                  # (re)write example_workflows/*.json
    python -m scripts.example_workflows --check          # exit 1 if the files differ from what this makes
    python -m scripts.example_workflows --record-core /path/to/ComfyUI   # refresh tests/data/comfy_core_nodes_<version>.json

The same graphs, with tiny model files swapped in, are what scripts/comfyui_smoke.py posts to a
real ComfyUI, so the templates users open are the graphs that were run. Settings are the official
FantasyTalking inference defaults (sampling.Guidance, pipeline.GenerationConfig, Euler) except
where a template's point is otherwise (05: a step-distilled LoRA). Each template carries a note
with the files to get, and each loader the download link the frontend's missing-models panel
offers. Thumbnails: scripts/template_thumbnails.py; the UI conversion: scripts/workflow_ui.py;
what a user sees in the browser: scripts/frontend_check.py; docs/templates.md says the rest. Run
from the repository root (scripts/__init__.py: ``python scripts/example_workflows.py`` works too).
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run by path: run again as `python -m <folder>.<name>` (scripts/__init__.py)
    import os, sys  # noqa: E401
    here, name = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", f"{os.path.basename(here)}.{name}", *sys.argv[1:]])

import argparse
import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fantasytalking_core.pipeline import DEFAULT_PROMPT, NEGATIVE_PROMPT, GenerationConfig
from fantasytalking_core.sampling import Guidance
from nodes.face import NO_PACK
from scripts import workflow_ui as ui
from scripts.comfy_host import make_base, serve

ROOT = ui.ROOT
OUT_DIR = ROOT / "example_workflows"
HF = "https://huggingface.co"
WAN_REPACK = f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
DISTILL_LORA = "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
REPOSITORY = re.search(r'^Repository = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


@dataclass(frozen=True)
class Files:
    """File names in ComfyUI's folders (defaults: the real files users download)."""

    wan: str = "wan2.1_i2v_720p_14B_fp8_e4m3fn.safetensors"  # the official base is Wan2.1-I2V-14B-720P
    fantasytalking: str = "fantasytalking_model.ckpt"
    adapters_with_identity: str = "fantasytalking_adapters.safetensors"  # trained with training/: no public file
    wav2vec: str = "wav2vec2-base-960h.safetensors"  # facebook's model.safetensors, saved under this name
    vae: str = "wan_2.1_vae.safetensors"
    text_encoder: str = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    text_encoder_type: str = "wan"
    clip_vision: str | None = "clip_vision_h.safetensors"
    lora: str = DISTILL_LORA
    image: str = "portrait.png"
    audio: str = "speech.wav"
    image_two: str = "two_people.png"  # 07: a portrait with two people in it
    audio_2: str = "speech_2.wav"  # 07: the second speaker's recording
    video: str = "talking.mp4"
    insightface_pack: str = "antelopev2"


@dataclass(frozen=True)
class Size:
    width: int = 512
    height: int = 512
    steps: int = GenerationConfig.steps
    max_frames: int = 81  # 01, 02, 05: the official cap (infer.py max_num_frames); 03: 0, the whole recording
    context_length: int = 81  # 03b: frames per context window (Wan2.1's and FantasyTalking's clip length)
    context_overlap: int = 16


@dataclass(frozen=True)
class Download:
    folder: str  # under ComfyUI/models/
    url: str


DOWNLOADS = {
    "wan2.1_i2v_720p_14B_fp8_e4m3fn.safetensors":
        Download("diffusion_models", f"{WAN_REPACK}/diffusion_models/wan2.1_i2v_720p_14B_fp8_e4m3fn.safetensors"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors":
        Download("text_encoders", f"{WAN_REPACK}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
    "wan_2.1_vae.safetensors": Download("vae", f"{WAN_REPACK}/vae/wan_2.1_vae.safetensors"),
    "clip_vision_h.safetensors": Download("clip_vision", f"{WAN_REPACK}/clip_vision/clip_vision_h.safetensors"),
    "fantasytalking_model.ckpt": Download("model_patches", f"{HF}/acvlab/FantasyTalking/resolve/main/fantasytalking_model.ckpt"),
    "wav2vec2-base-960h.safetensors":
        Download("audio_encoders", f"{HF}/facebook/wav2vec2-base-960h/resolve/main/model.safetensors"),
    DISTILL_LORA: Download("loras", f"{HF}/Kijai/WanVideo_comfy/resolve/main/Lightx2v/{DISTILL_LORA}"),
    # no public file: the link says how to train one (the frontend lists it under its folder, no download)
    "fantasytalking_adapters.safetensors":
        Download("model_patches", f"{REPOSITORY}/blob/main/docs/templates.md#identity-and-motion-adapters"),
}
NOTE_REMARKS = {"wav2vec2-base-960h.safetensors": " (facebook's model.safetensors under this name, or the whole "
                "[facebook/wav2vec2-base-960h](https://huggingface.co/facebook/wav2vec2-base-960h) folder there)",
                "fantasytalking_adapters.safetensors": ": an adapter file with identity and motion trained with "
                "this pack's training module (no public weights yet)"}
INSIGHTFACE = "https://github.com/deepinsight/insightface/releases/download/v0.7"  # antelopev2.zip, buffalo_l.zip
OFFICIAL = {"seed": GenerationConfig.seed, "steps": GenerationConfig.steps, "cfg_text": Guidance.cfg_text,
            "cfg_audio": Guidance.cfg_audio, "sampler_name": "euler", "shift": GenerationConfig.shift}


# ------------------------------------------------------------------------------ graphs
def _sampling(s: Size) -> dict:
    """The sampling widgets of FantasyTalking Sampler and Long Video Sampler: the official settings."""
    return {**OFFICIAL, "steps": s.steps, "audio_guidance_start": Guidance.audio_start,
            "audio_guidance_end": Guidance.audio_end, "scheduler": "simple"}


def _portrait_video(f: Files, s: Size, *, identity: bool = False, long_audio: bool = False,
                    trained: bool = False) -> dict:
    g = {
        "image": {"class_type": "LoadImage", "inputs": {"image": f.image}},
        "audio": {"class_type": "LoadAudio", "inputs": {"audio": f.audio}},
        "wan": {"class_type": "UNETLoader", "inputs": {"unet_name": f.wan, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": f.text_encoder, "type": f.text_encoder_type,
                                                         "device": "default"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": DEFAULT_PROMPT}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": NEGATIVE_PROMPT}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": f.vae}},
        "ft": {"class_type": "FantasyTalkingModelLoader",
               "inputs": {"model_name": f.adapters_with_identity if trained else f.fantasytalking, "precision": "auto"}},
        "w2v": {"class_type": "FantasyTalkingWav2VecLoader", "inputs": {"model_name": f.wav2vec, "device": "auto"}},
        "enc": {"class_type": "FantasyTalkingAudioEncode",
                "inputs": {"audio": ["audio", 0], "wav2vec": ["w2v", 0], "fps": GenerationConfig.fps, "frames": 0,
                           "max_frames": 0 if long_audio else s.max_frames}},
        "i2v": {"class_type": "WanImageToVideo",
                "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0], "start_image": ["image", 0],
                           "width": s.width, "height": s.height, "length": ["enc", 1], "batch_size": 1}},
        "apply": {"class_type": "FantasyTalkingApply",
                  "inputs": {"model": ["wan", 0], "fantasytalking_model": ["ft", 0], "audio_features": ["enc", 0],
                             "audio_scale": GenerationConfig.audio_scale, "audio_mode": "frame"}},
        "sampler": {"class_type": "FantasyTalkingSampler",
                    "inputs": {"model": ["apply", 0], "positive": ["i2v", 0], "negative": ["i2v", 1],
                               "latent_image": ["i2v", 2], **_sampling(s), "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["vae", 0]}},
        "video": {"class_type": "CreateVideo", "inputs": {"images": ["decode", 0], "fps": GenerationConfig.fps,
                                                          "audio": ["enc", 2]}},
        "save": {"class_type": "SaveVideo", "inputs": {"video": ["video", 0], "filename_prefix": "video/FantasyTalking",
                                                         "format": "mp4", "codec": "h264"}},
    }
    if f.clip_vision:
        g["clipv"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": f.clip_vision}}
        g["clipv_enc"] = {"class_type": "CLIPVisionEncode",
                          "inputs": {"clip_vision": ["clipv", 0], "image": ["image", 0], "crop": "none"}}
        g["i2v"]["inputs"]["clip_vision_output"] = ["clipv_enc", 0]
    if identity:  # with the released weights identity is off (Apply's status says so): no insightface pack needed
        g["face"] = {"class_type": "FantasyTalkingFaceEmbed",
                     "inputs": {"image": ["image", 0], "insightface_pack": f.insightface_pack if trained else NO_PACK,
                                "min_confidence": 0.5, "crop_scale": 1.5}}
        g["motion"] = {"class_type": "FantasyTalkingMotionIntensity", "inputs": {"omega_l": 0.6, "omega_b": 0.4}}
        g["apply"]["inputs"].update(face=["face", 0], id_scale=0.5, motion=["motion", 0])
        g["face_preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["face", 1]}}
    if long_audio:  # the whole audio in one video (frames follow the audio, no cap) and a tiled decode
        g["decode"] = {"class_type": "VAEDecodeTiled",
                       "inputs": {"samples": ["sampler", 0], "vae": ["vae", 0], "tile_size": 512, "overlap": 64,
                                  "temporal_size": 64, "temporal_overlap": 8}}
    return g


def identity_and_motion(f: Files, s: Size, trained: bool = False) -> dict:
    """02: 01 plus Face Embed and Motion Intensity into Apply. As a template: the released weights
    (identity off, the sliders drive the training-free controls); ``trained``: an adapter file with
    identity and motion modules and an insightface pack (what the note tells users to pick)."""
    return _portrait_video(f, s, identity=True, trained=trained)


FILE_OUTPUT = {"filename_prefix": "video/FantasyTalking", "save_output": False, "keep_partial": False}  # for Save Video


def _long_audio(f: Files, s: Size) -> dict:
    """03: the whole recording through FantasyTalking Long Video Sampler (to file): segments of 81
    frames, each starting from the end of the one before, each with the audio of its own frames, all
    with the portrait's CLIP tokens, written into an mp4 as they are made (no IMAGE of every frame);
    Save Video copies the file's streams into the output folder."""
    g = _portrait_video(f, s, long_audio=True)
    for key in ("i2v", "apply", "sampler", "decode", "video"):
        del g[key]
    g["long"] = {"class_type": "FantasyTalkingLongVideoToFile",
                 "inputs": {"model": ["wan", 0], "fantasytalking_model": ["ft", 0], "audio_features": ["enc", 0],
                            "audio": ["audio", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0],
                            "start_image": ["image", 0], "width": s.width, "height": s.height,
                            "segment_frames": GenerationConfig.segment_frames,
                            "motion_frames": GenerationConfig.motion_frames,
                            "audio_scale": GenerationConfig.audio_scale, **_sampling(s),
                            "color_match": GenerationConfig.color_match, **FILE_OUTPUT}}
    if f.clip_vision:
        g["long"]["inputs"]["clip_vision_output"] = ["clipv_enc", 0]
    g["save"]["inputs"]["video"] = ["long", 0]
    g = {k: g[k] for k in [k for k in g if k != "save"] + ["save"]}  # outputs last
    return g


def _context_windows(f: Files, s: Size) -> dict:
    """03 through core's WanContextWindowsManual: the sampler runs overlapping windows of
    ``context_length`` frames; Apply gives each window the audio of its own frames. Core slices
    Wan I2V's image per window from 0.33 on; 0.3.64 cannot run it (Apply says so)."""
    g = _portrait_video(f, s, long_audio=True)
    g["windows"] = {"class_type": "WanContextWindowsManual",
                    "inputs": {"model": ["apply", 0], "context_length": s.context_length,
                               "context_overlap": s.context_overlap, "context_schedule": "standard_static",
                               "context_stride": 1, "closed_loop": False, "fuse_method": "pyramid",
                               "freenoise": True, "retain_first_frame": False, "split_conds_to_windows": False}}
    g["sampler"]["inputs"]["model"] = ["windows", 0]
    return g


def _distill_lora(f: Files, s: Size) -> dict:
    """01 with a step-distilled Wan2.1 I2V LoRA: 6 steps, cfg_text 1 (the LoRA has text CFG
    distilled in), audio guidance on every step (on fewer than ~70% of them lip sync suffers)."""
    g = _portrait_video(f, s)
    g["lora"] = {"class_type": "LoraLoaderModelOnly",
                 "inputs": {"model": ["wan", 0], "lora_name": f.lora, "strength_model": 1.0}}
    g["apply"]["inputs"]["model"] = ["lora", 0]
    g["sampler"]["inputs"].update(steps=6, cfg_text=1.0, audio_guidance_end=1.0)
    return g


def _lip_mask_preview(f: Files, s: Size) -> dict:
    return {
        "video": {"class_type": "LoadVideo", "inputs": {"file": f.video}},
        "parts": {"class_type": "GetVideoComponents", "inputs": {"video": ["video", 0]}},
        "lips": {"class_type": "FantasyTalkingLipMask",
                 "inputs": {"images": ["parts", 0], "dilation": 2, "missing_face": "interpolate"}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["lips", 1]}},
        "mask_image": {"class_type": "MaskToImage", "inputs": {"mask": ["lips", 0]}},
        "mask_preview": {"class_type": "PreviewImage", "inputs": {"images": ["mask_image", 0]}},
    }


def _dub_video(f: Files, s: Size) -> dict:
    """06: a video of a talking face + new speech -> the same video, only the mouth and jaw regenerated
    (FantasyTalking Dub Mask -> Dub Sampler (to file): written into an mp4 as the segments are made),
    at the source's frame rate (GetVideoComponents' fps); Save Video copies the file's streams."""
    g = _portrait_video(f, s)
    for key in ("image", "enc", "i2v", "apply", "sampler", "decode", "video"):
        del g[key]
    g["source"] = {"class_type": "LoadVideo", "inputs": {"file": f.video}}
    g["parts"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["source", 0]}}
    g["mask"] = {"class_type": "FantasyTalkingDubMask",
                 "inputs": {"images": ["parts", 0], "dilation": 8, "jaw": True, "feather": 8}}
    g["dub"] = {"class_type": "FantasyTalkingDubToFile",
                "inputs": {"model": ["wan", 0], "fantasytalking_model": ["ft", 0], "wav2vec": ["w2v", 0],
                           "audio": ["audio", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0],
                           "images": ["parts", 0], "fps": ["parts", 2], "mask": ["mask", 0], "fit": "cut",
                           "size": max(s.width, s.height), "segment_frames": GenerationConfig.segment_frames,
                           "motion_frames": GenerationConfig.motion_frames,
                           "audio_scale": GenerationConfig.audio_scale, **_sampling(s), "paste_back": True,
                           **FILE_OUTPUT}}
    if f.clip_vision:
        g["first"] = {"class_type": "ImageFromBatch", "inputs": {"image": ["parts", 0], "batch_index": 0, "length": 1}}
        g["clipv_enc"]["inputs"]["image"] = ["first", 0]
        g["dub"]["inputs"]["clip_vision_output"] = ["clipv_enc", 0]
    g["mask_preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["mask", 1]}}
    g["save"]["inputs"]["video"] = ["dub", 0]
    g = {k: g[k] for k in [k for k in g if k != "save"] + ["save"]}  # outputs last
    return g


def _two_speakers(f: Files, s: Size) -> dict:
    """07: two people in one portrait, two recordings in turns: FantasyTalking Speaker Regions finds the faces
    (numbered left to right, previewed), FantasyTalking Speakers lays the recordings one after the other and
    routes each voice to its own region, the Long Video Sampler (to file) makes the whole dialogue into an mp4."""
    g = _long_audio(f, s)
    del g["enc"]
    g["image"]["inputs"]["image"] = f.image_two
    g["audio_2"] = {"class_type": "LoadAudio", "inputs": {"audio": f.audio_2}}
    g["regions"] = {"class_type": "FantasyTalkingSpeakerRegions",
                    "inputs": {"image": ["image", 0], "speakers": 2, "grow": 1.0, "feather": 8}}
    g["regions_preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["regions", 1]}}
    g["speakers"] = {"class_type": "FantasyTalkingSpeakers",
                     "inputs": {"wav2vec": ["w2v", 0], "audio_1": ["audio", 0], "audio_2": ["audio_2", 0],
                                "timing": "turns", "gap": 0.3, "schedule": "0-3.2:1, 3.2-7.5:2",
                                "fps": GenerationConfig.fps, "frames": 0, "max_frames": 0,
                                "regions": ["regions", 0], "region_guidance": False}}
    inputs = g["long"]["inputs"]
    del inputs["audio_features"]
    inputs.update(speakers=["speakers", 0], audio=["speakers", 2])
    return {k: g[k] for k in [k for k in g if k != "save"] + ["save"]}  # outputs last


@dataclass(frozen=True)
class Template:
    build: Callable[[Files, Size], dict]
    about: str  # the note's first lines (markdown)
    min_comfyui: str = ui.HOSTS[0]


TEMPLATES = {
    "01_portrait_audio_to_talking_video": Template(
        _portrait_video, "A portrait and a voice recording in, a talking video out (up to 81 frames, 3.5 s at "
        "23 fps; longer audio is cut, see 03)."),
    "02_identity_and_motion_sliders": Template(
        identity_and_motion,
        "01 plus the motion sliders (omega_l face, omega_b body; 0.5 neutral, the official result) and the identity "
        "adapter. With the released fantasytalking_model.ckpt (audio only) the sliders drive training-free controls: "
        "omega_l the audio strength (audio_scale and audio guidance), omega_b the motion amplitude of the I2V "
        "conditioning; identity is off (Face Embed gives the crop only). With an adapter file trained with identity "
        "and motion (the pack's training module; no public weights yet), pick it in FantasyTalking Model Loader and "
        "an insightface pack (antelopev2 or buffalo_l in models/insightface/models/) in Face Embed: the learned "
        "modules act instead. FantasyTalking Apply's status output says what acted (docs/motion.md). Connect a "
        "video to Motion Intensity's reference_video to copy its motion."),
    "03_long_audio": Template(
        _long_audio, "A recording of any length becomes one video: FantasyTalking Long Video Sampler makes it in "
        "segments of 81 frames (3.5 s), each starting from the end of the one before, each with the audio of its own "
        "frames, all with the portrait's identity and colours, so memory stays that of one 81-frame clip. Audio "
        "Encode's max_frames 0 keeps the whole recording. The segments run one after the other inside the node "
        "(progress shows all of them, with a frame of each) and go into an mp4 as they are made, so no memory holds "
        "every frame either: save_output off puts that file in the temp folder and Save Video copies its streams to "
        "the output folder (no second encode); on, the node saves it itself."),
    "03b_long_audio_context_windows": Template(
        _context_windows, "The whole audio through core's WanContextWindowsManual: overlapping windows of 81 "
        "frames (16 shared), each with the audio of its own frames, so memory stays that of one 81-frame clip. "
        "Try retain_first_frame on if the face drifts.", min_comfyui="0.33.0"),
    "03c_short_audio_one_pass": Template(
        lambda f, s: _portrait_video(f, s, long_audio=True),
        "For recordings up to about 10 s: the whole audio in one video, sampled in one pass (no seams; memory and "
        "time grow with the square of the length, so use 03 for anything longer) and decoded in tiles."),
    "04_lip_mask_preview": Template(
        _lip_mask_preview, "The lip mask the training uses, on a video of yours (Load Video): MediaPipe lip "
        "landmarks per frame, previewed over the frames and as a mask."),
    "05_fast_distill_lora": Template(
        _distill_lora, "A recipe, untested with real weights: 01 with the step-distilled lightx2v Wan2.1 I2V LoRA "
        "(LoraLoaderModelOnly): 6 steps (4-8), cfg_text 1, audio guidance (cfg_audio 5) kept on every step, since "
        "audio CFG on fewer than ~70% of the steps loses lip sync. About 7x fewer model passes than 01. The LoRA was "
        "distilled for the 480P model; the 720P base works with it in other pipelines, try the 480P file if "
        "faces smear. two_pass_shortcut changes nothing at cfg_text 1 and stays off."),
    "06_dub_video": Template(
        _dub_video, "Dub a video: a video of a talking face (Load Video) and new speech (Load Audio) in, the same "
        "video out with only the mouth and jaw regenerated to the new speech; everything else is the source's own "
        "pixels, at its frame rate and length. FantasyTalking Dub Mask draws the region per frame (dilation, jaw, "
        "feather; frames without a face are left untouched; the preview shows it); FantasyTalking Dub Sampler "
        "holds the rest of each frame to the source at every step (core's denoise mask) and runs the video in "
        "segments of 81 frames at 23 fps, writing each into an mp4 as it is made (Save Video copies the file), so "
        "any length works. fit decides when the speech and the video differ "
        "in length: cut (the video's length), loop or hold (the speech's). Settings are the official ones "
        "(Euler, 30 steps, cfg_text 5, cfg_audio 5, seed 1111); size is the model's longest edge (512)."),
    "07_two_speakers": Template(
        _two_speakers, "Two people talking in one video, each voice moving only its own face: a portrait with both "
        "people (Load Image) and one recording per speaker (Load Audio), said in turns (speaker 1, a 0.3 s gap, "
        "speaker 2). FantasyTalking Speaker Regions finds the faces, numbers them left to right (the preview shows "
        "which is which: swap the recordings if needed) and grows them to head and shoulders; connect mask_1 and "
        "mask_2 (mask editor) to draw the regions yourself. FantasyTalking Speakers gives each speaker their own "
        "track, silence while the other talks, and the Long Video Sampler (to file) makes the whole dialogue in "
        "segments, writing each into an mp4 as it is made (Save Video copies the file). "
        "timing: together (overlapping voices), channels (a stereo recording) or schedule (one recording, who speaks "
        "when). region_guidance keeps cfg_audio inside the regions. How it works and its limits: docs/speakers.md."),
}


def api_graphs(files: Files = Files(), size: Size = Size()) -> dict[str, dict]:
    """{workflow name: API-format graph}; inputs of our nodes the graph leaves unset get their
    declared defaults, so a graph stays complete when a node gains an input."""
    pack = ui.pack_declarations()
    graphs = {name: t.build(files, size) for name, t in TEMPLATES.items()}
    for graph in graphs.values():
        for node in graph.values():
            decl = pack.get(node["class_type"], {}).get("input", {})
            for name, spec in decl.get("required", {}).items():
                if ui.is_widget(spec) and name not in node["inputs"] and "default" in ui.options(spec):
                    node["inputs"][name] = ui.options(spec)["default"]
    return graphs


# ------------------------------------------------------------------------------ notes
def note(name: str, graph: dict) -> str:
    """Markdown for the template's note: what it does, the files to get and where, the settings."""
    t = TEMPLATES[name]
    lines = [f"## {name.split('_', 1)[1].replace('_', ' ').capitalize()}", "", t.about, "", "### Files to get", ""]
    values = [v for node in graph.values() for v in node["inputs"].values() if isinstance(v, str)]
    if not any(v in DOWNLOADS for v in values):
        lines.append("None: MediaPipe's face mesh comes with the pack's requirements.")
    for v in dict.fromkeys(values):
        if v in DOWNLOADS:
            d = DOWNLOADS[v]
            lines.append(f"- [{v}]({d.url}) in `models/{d.folder}/`{NOTE_REMARKS.get(v, '')}")
    if any(n["class_type"] == "FantasyTalkingFaceEmbed" for n in graph.values()):
        lines.append(f"- for identity only (adapter files with an identity module): the insightface pack "
                     f"[antelopev2.zip]({INSIGHTFACE}/antelopev2.zip) unzipped to "
                     "`models/insightface/models/antelopev2/` (or buffalo_l)")
    media = {"LoadImage": "a portrait (Load Image)" if "speakers" not in graph else "a portrait of both people "
             "(Load Image)", "LoadAudio": "speech (Load Audio)" if "speakers" not in graph else "each speaker's "
             "recording (the two Load Audio)",
             "LoadVideo": "a video of a talking face (Load Video)"}
    yours = [m for k, m in media.items() if any(n["class_type"] == k for n in graph.values())]
    lines += ["", "### Then", "", f"Choose {' and '.join(yours)} and press Run."]
    if "sampler" in graph or "long" in graph:
        o = OFFICIAL
        lines.append("Width and height: your image's shape with the longest side 512, multiples of 16 (e.g. "
                     f"416 x 512 for 4:5). Settings are the official FantasyTalking ones ({o['sampler_name'].capitalize()}, "
                     f"{o['steps']} steps, cfg_text {o['cfg_text']:g}, cfg_audio {o['cfg_audio']:g}, seed {o['seed']}, "
                     f"{GenerationConfig.fps:g} fps) unless this note says otherwise.")
    checked = [h for h in ui.HOSTS if version_tuple(h) >= version_tuple(t.min_comfyui)]
    lines += ["", f"Needs ComfyUI {t.min_comfyui} or newer (checked on {' and '.join(checked)}). "
              "Details: docs/templates.md in the pack."]
    return "\n".join(lines)


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def render() -> dict[str, str]:
    info = ui.object_info()
    return {f"{name}.json": json.dumps(ui.to_ui(name, graph, info, DOWNLOADS, note(name, graph)), indent=1,
                                       ensure_ascii=False) + "\n"
            for name, graph in api_graphs().items()}


# ------------------------------------------------------------------------------ recording
def core_node_types() -> list[str]:
    """Core node types the templates use (ours excluded)."""
    pack = ui.pack_declarations()
    return sorted({n["class_type"] for g in api_graphs().values() for n in g.values()} - set(pack))


def record_core(comfyui: Path) -> Path:
    """Start that ComfyUI (headless, CPU, empty temporary base directory), read /object_info and
    write the declarations of the core nodes the templates use to tests/data."""
    keep = ("input", "input_order", "output", "output_name", "output_node")
    with tempfile.TemporaryDirectory(prefix="ft_record_") as tmp:
        with serve(comfyui, make_base(Path(tmp), pack=None)) as server:
            version = server.version()
            served = server.get("/object_info", timeout=120)
    types = core_node_types()
    missing = [t for t in types if t not in served]
    out = {"_about": f"/object_info of ComfyUI {version} for the core nodes the example workflows use "
                     f"(input/output declarations only; {', '.join(missing) or 'none'} not served by this host). "
                     "Written by scripts/example_workflows.py --record-core."}
    out.update({t: {k: served[t][k] for k in keep if k in served[t]} for t in types if t in served})
    path = ui.DATA / f"comfy_core_nodes_{version}.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    p.add_argument("--record-core", metavar="COMFYUI", type=Path,
                   help="record that ComfyUI's core node declarations to tests/data and exit")
    args = p.parse_args(argv)
    if args.record_core:
        print(f"wrote {record_core(args.record_core).relative_to(ROOT)}")
        return 0
    stale = []
    for name, text in render().items():
        path = OUT_DIR / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT_DIR.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("out of date (run python -m scripts.example_workflows): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
