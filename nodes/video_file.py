"""Long videos straight to a file: FantasyTalking Long Video Sampler (to file) and FantasyTalking Dub
Sampler (to file).

The same inputs and segment loop as the Long Video and Dub samplers, but no IMAGE of every frame:
each segment's frames go into an H.264 (yuv420p) + AAC mp4 as soon as they are made, with the audio
up to its last frame (``fantasytalking_core.video.VideoWriter``), so memory stays that of one
segment however long the video. The file is built under a hidden name beside its final one and
appears (one atomic link) only when complete: an interrupt or an error leaves nothing, or, with
``keep_partial``, a shorter playable ``..._partial.mp4`` with the sound of its frames.

Named as Save Video names files (``filename_prefix``, core's counter, never overwriting), with the
prompt and workflow in its tags unless ComfyUI runs with --disable-metadata. ``save_output`` on: the
output folder (the node is the save); off: the temp folder, for a Save Video after it, which
stream-copies the file (no frame decoded or re-encoded). The node returns core's file-backed VIDEO,
the audio and the frame count, shows a preview frame on the progress bar after each segment and the
finished video on the node. docs/long_audio.md ("In ComfyUI without the frames in memory").
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from fantasytalking_core.video import VideoWriter

from . import _host
from .dub import FantasyTalkingDubSampler
from .long_video import FantasyTalkingLongVideoSampler, SegmentVideo

CATEGORY = "FantasyTalking"
log = logging.getLogger("FantasyTalking")

RETURN_TYPES = ("VIDEO", "AUDIO", "INT")
RETURN_NAMES = ("video", "audio", "frames")
OUTPUT_TOOLTIPS = (
    "The mp4 as core's file-backed VIDEO: Save Video copies its streams as they are (no re-encode); any VIDEO "
    "input takes it. Get Video Components decodes every frame of it into memory (the cost this node avoids).",
    "The recording cut to the video's frames (the file's own sound).",
    "The number of frames in the file.")


def file_inputs() -> dict:
    """Where the file goes, and what an interrupted run leaves."""
    return {
        "filename_prefix": ("STRING", {"default": "video/FantasyTalking",
                                       "tooltip": "Named as Save Video names files: prefix_00001_.mp4, numbered after "
                                                  "the files already there (never overwritten); a/b puts it in a "
                                                  "sub-folder. %date:...% and %width%/%height% work as in core."}),
        "save_output": ("BOOLEAN", {"default": True, "label_on": "output folder", "label_off": "temp (Save Video)",
                                    "tooltip": "On: the file goes to ComfyUI's output folder, with the prompt and "
                                               "workflow in its tags (unless --disable-metadata): no Save Video "
                                               "needed. Off: to the temp folder, when a Save Video after this node "
                                               "saves it (it copies the streams; no second encode)."}),
        "keep_partial": ("BOOLEAN", {"default": False,
                                     "tooltip": "When the run is cancelled or fails: on, keep the frames made so far as "
                                                "a playable prefix_NNNNN_partial.mp4 (its sound cut to them); off, "
                                                "leave no file at all."}),
    }


HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"}


@dataclass(frozen=True)
class FileSettings:
    """The file inputs of a (to file) node, and what core passes it hidden."""

    filename_prefix: str = "video/FantasyTalking"
    save_output: bool = True
    keep_partial: bool = False
    prompt: dict | None = None
    extra_pnginfo: dict | None = None

    def metadata(self) -> dict[str, str]:
        """Save Video's tags: the workflow (and anything else in extra_pnginfo) and the prompt, as JSON."""
        if not _host.metadata_enabled():
            return {}
        tags = {**(self.extra_pnginfo or {}), **({"prompt": self.prompt} if self.prompt is not None else {})}
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()}


class PublishedFiles:
    """What this process published per node (unique id), for IS_CHANGED: ComfyUI serves a re-queued prompt
    from its cache, whose VIDEO points at the file made then; if that file was deleted, the
    fingerprint changes and the node runs again (once: the new file carries the changed value on)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[Path, int]] = {}

    def fingerprint(self, node_id: str | None) -> int:
        path, generation = self._files.get(str(node_id), (None, 0))
        return generation if path is None or path.exists() else generation + 1

    def record(self, node_id: str | None, path: Path, fingerprint: int) -> None:
        """The node published `path` in a run whose IS_CHANGED answered `fingerprint` (taken before
        the run: the new file may have the deleted one's name)."""
        self._files[str(node_id)] = (path, fingerprint)


PUBLISHED = PublishedFiles()  # per process, as ComfyUI's own cache


def write_file(video: SegmentVideo, settings: FileSettings, node: str) -> tuple[Path, str, str]:
    """Make the video into its mp4 segment by segment -> (path, subfolder, "output" | "temp").

    Each chunk is encoded as it comes (frames and the audio up to them) and the progress bar shows
    its last frame; the file appears under a free Save Video name only once complete. On any stop
    (core's interrupt is a BaseException in newer core) the hidden file is removed, or with
    ``keep_partial`` the frames so far are published as ``..._partial.mp4``; the stop goes on."""
    temp = not settings.save_output
    kind = "temp" if temp else "output"

    def free(suffix: str = "") -> tuple[Path, str]:
        folder, name, counter, subfolder = _host.save_path(settings.filename_prefix, video.width, video.height, temp)
        return folder / f"{name}_{counter:05}_{suffix}.mp4", subfolder

    path, subfolder = free()
    wave = video.audio["waveform"][0]  # [C, N] of the AUDIO cut to the frames
    writer = VideoWriter(path, video.fps, wave, int(video.audio["sample_rate"]), metadata=settings.metadata())
    log.info("%s: writing %d frames at %g fps to the %s folder as %s", node, video.frames, video.fps, kind, path.name)
    made = False
    try:
        for chunk in video.chunks:
            writer.write(chunk)
            _host.show_progress(writer.frames_written, video.frames, chunk[-1])
        if writer.frames_written != video.frames:  # never a file shorter than the video it claims to be
            raise RuntimeError(f"{node}: the segments made {writer.frames_written} frames of {video.frames}")
        made = True
        writer.path, subfolder = free()  # a name still free now (another save may have taken the first)
        writer.close()
    except BaseException:
        if settings.keep_partial and writer.frames_written and not made:
            writer.path, subfolder = free("partial")
            writer.close()
            log.warning("%s: stopped after %d of %d frames; kept %s", node, writer.frames_written, video.frames,
                        writer.path)
        else:
            writer.abort()
        raise
    return writer.path, subfolder, kind


class _ToFile:
    """What a (to file) node adds to its sampler (the class after it): the file inputs, the VIDEO, audio
    and frame count, the video shown on the node, and IS_CHANGED for a deleted file."""

    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS
    FUNCTION = "to_file"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        spec = super().INPUT_TYPES()
        return {"required": {**spec["required"], **file_inputs()}, "optional": spec.get("optional", {}),
                "hidden": HIDDEN}

    @classmethod
    def IS_CHANGED(cls, unique_id=None, **_):
        return PUBLISHED.fingerprint(unique_id)

    def to_file(self, filename_prefix="video/FantasyTalking", save_output=True, keep_partial=False, prompt=None,
                extra_pnginfo=None, unique_id=None, **inputs):
        settings = FileSettings(filename_prefix, save_output, keep_partial, prompt, extra_pnginfo)
        video = self.video(**inputs)
        fingerprint = PUBLISHED.fingerprint(unique_id)  # before the file exists: it may take a deleted one's name
        path, subfolder, kind = write_file(video, settings, self.NAME)
        PUBLISHED.record(unique_id, path, fingerprint)
        ui = {"images": [{"filename": path.name, "subfolder": subfolder, "type": kind}], "animated": (True,)}
        return {"ui": ui, "result": (_host.video_from_file(path), video.audio, video.frames)}


class FantasyTalkingLongVideoToFile(_ToFile, FantasyTalkingLongVideoSampler):
    DESCRIPTION = ("FantasyTalking Long Video Sampler writing the video into an mp4 as the segments are made, "
                   "instead of holding every frame: memory stays that of one segment however long the recording. "
                   "Outputs core's file-backed VIDEO (for Save Video or any VIDEO input), the audio and the frame "
                   "count; shows the finished video.")
    NAME = "FantasyTalking Long Video Sampler (to file)"


class FantasyTalkingDubToFile(_ToFile, FantasyTalkingDubSampler):
    DESCRIPTION = ("FantasyTalking Dub Sampler writing the dubbed video into an mp4 as the segments are made, "
                   "instead of holding every output frame. Outputs core's file-backed VIDEO (for Save Video or any "
                   "VIDEO input), the new audio and the frame count; shows the finished video.")
    NAME = "FantasyTalking Dub Sampler (to file)"
