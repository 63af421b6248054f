"""Media files through PyAV: frames + audio -> mp4 (H.264 yuv420p + AAC, written atomically, in one
go or streamed chunk by chunk with `VideoWriter`), and
every file we read back: `decode_audio` (the one audio decoder: wav, flac, ogg, mp3, m4a/aac, opus,
the audio track of a video), `read_video` (a whole file), `frames_at_fps` (streamed, resampled to
a frame rate: the trainer's reader of long source videos), `probe`.

`write_video` never leaves a half-written file: it encodes into a hidden temporary file in the
target folder and moves it into place only when complete, and it refuses to replace an existing
file unless asked. The audio track is cut or padded with silence to exactly the video's length.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
import torch

_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".m4v", ".webm", ".avi")  # what a folder of videos is searched for


class VideoData(NamedTuple):
    """What `read_video` returns; unpacks as `frames, fps, audio, sample_rate`."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: float
    audio: np.ndarray | None  # float32 [C, N] in [-1, 1], or None without an audio stream
    sample_rate: int | None


def _as_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype != torch.float64:
            x = x.float()  # bf16/fp16 have no numpy equivalent
        return x.numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _check_frames(frames: Any) -> np.ndarray:
    arr = _as_numpy(frames, "frames")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        hint = " (channels first? permute to [T, H, W, 3])" if arr.ndim == 4 and arr.shape[1] == 3 else ""
        raise ValueError(f"frames must be RGB [T, H, W, 3], got shape {tuple(arr.shape)}{hint}")
    if arr.shape[0] == 0:
        raise ValueError("frames is empty (T = 0): nothing to write")
    if arr.shape[1] < 2 or arr.shape[2] < 2:
        raise ValueError(f"frames must be at least 2x2 pixels, got {arr.shape[1]}x{arr.shape[2]}")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"frames must be uint8 (0..255) or float (0..1), got dtype {arr.dtype}")
    return arr


def _frame_rgb24(frame: np.ndarray, index: int) -> np.ndarray:
    """One [H, W, 3] frame -> uint8, padded to even size by repeating the last row/column."""
    if frame.dtype != np.uint8:
        if not np.isfinite(frame).all():
            raise ValueError(f"frame {index} contains NaN or infinite values; check the decoder output")
        frame = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    h, w = frame.shape[:2]
    if h % 2 or w % 2:  # yuv420p needs even sizes
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(frame)


def _check_audio(audio: Any, sample_rate: Any) -> np.ndarray:
    wav = _as_numpy(audio, "audio")
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        hint = " (a ComfyUI AUDIO waveform is [B, C, T]: pass waveform[0])" if wav.ndim == 3 else ""
        raise ValueError(f"audio must be a waveform [C, T] or [T], got shape {tuple(wav.shape)}{hint}")
    if wav.shape[0] not in (1, 2):
        raise ValueError(f"audio must have 1 or 2 channels, got {wav.shape[0]} (shape {tuple(wav.shape)}); downmix first")
    if not np.issubdtype(wav.dtype, np.floating):
        raise TypeError(f"audio must be float in [-1, 1], got dtype {wav.dtype}")
    if not np.isfinite(wav).all():
        raise ValueError("audio contains NaN or infinite values")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int when audio is given, got {sample_rate!r}")
    return np.clip(wav.astype(np.float32), -1.0, 1.0)


def _fit_audio(wav: np.ndarray, num_samples: int) -> np.ndarray:
    """Cut to, or pad with trailing silence up to, exactly `num_samples`."""
    if wav.shape[1] >= num_samples:
        return np.ascontiguousarray(wav[:, :num_samples])
    return np.pad(wav, ((0, 0), (0, num_samples - wav.shape[1])))


def _fps(fps: Any) -> Fraction:
    try:
        ok = math.isfinite(float(fps)) and float(fps) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(10000)


def write_video(
    frames: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    fps: float | Fraction = 23,
    audio: torch.Tensor | np.ndarray | None = None,
    sample_rate: int | None = None,
    *,
    overwrite: bool = False,
    crf: int = 18,
    preset: str = "medium",
    audio_bitrate: int = 192_000,
) -> Path:
    """Encode frames [T, H, W, 3] (uint8, or float 0..1, clipped) to H.264 + AAC; return the path.

    Odd heights/widths are padded by one repeated row/column (yuv420p needs even sizes). Audio
    ([C, T] or [T] float, 1 or 2 channels, with `sample_rate`) is cut or padded with silence to
    round(T_frames / fps * sample_rate) samples, so both streams last T_frames / fps seconds.
    Raises FileExistsError if `path` exists and overwrite is False. (`VideoWriter` for frames that
    come in pieces.)
    """
    with VideoWriter(path, fps, audio, sample_rate, overwrite=overwrite, crf=crf, preset=preset,
                     audio_bitrate=audio_bitrate) as out:
        out.write(frames)
    return out.path


class VideoWriter:
    """An mp4 (mov, mkv) written frame chunk by frame chunk: only the encoder's few frames are held.

    The video stream is encoded as `write` gets frames [T, H, W, 3] (uint8 or float 0..1; every
    chunk the size of the first); the audio track, given up front, is cut or padded to the frames
    written and muxed once, by `close`. Atomic as `write_video`: the file is built under a hidden
    temporary name in the target folder and appears at `path` only when `close` completes; `abort`
    (or an exception inside ``with``) removes it. An existing `path` is replaced only with `overwrite`.
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction = 23,
                 audio: torch.Tensor | np.ndarray | None = None, sample_rate: int | None = None, *,
                 overwrite: bool = False, crf: int = 18, preset: str = "medium", audio_bitrate: int = 192_000):
        path = Path(path)
        self.format = _FORMATS.get(path.suffix.lower())
        if self.format is None:
            raise ValueError(f"cannot tell the container from {path.name!r}; use one of {sorted(_FORMATS)}")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"output folder {path.parent} does not exist; create it first")
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder; give a file name such as {path / 'video.mp4'}")
        if path.exists() and not overwrite:
            raise FileExistsError(_exists_message(path))
        if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an int in [0, 51] (lower is better quality), got {crf!r}")
        self.rate = _fps(fps)
        self.wav = None if audio is None else _check_audio(audio, sample_rate)
        if audio is None and sample_rate is not None:
            raise ValueError("sample_rate was given without audio; pass the waveform as audio=")
        self.path, self.overwrite, self.sample_rate = path, overwrite, sample_rate
        self.options = {"crf": str(crf), "preset": preset}
        self.audio_bitrate = audio_bitrate
        self.frames_written = 0
        self._tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
        self._out = self._vs = self._aus = None
        self._size: tuple[int, int] | None = None

    def _open(self, h: int, w: int) -> None:
        import av  # imported on use: no work at import time

        options = {"movflags": "+faststart"} if self.format in ("mp4", "mov") else {}
        self._out = av.open(str(self._tmp), mode="w", format=self.format, options=options)
        self._vs = self._out.add_stream("libx264", rate=self.rate, options=self.options)
        self._vs.width, self._vs.height, self._vs.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        if self.wav is not None:  # every stream is declared before the first packet is muxed
            self._aus = self._out.add_stream("aac", rate=int(self.sample_rate),
                                             layout="mono" if self.wav.shape[0] == 1 else "stereo")
            self._aus.bit_rate = self.audio_bitrate
        self._size = (h, w)

    def write(self, frames: torch.Tensor | np.ndarray) -> None:
        """Encode frames [T, H, W, 3]; the first chunk fixes the size."""
        import av

        arr = _check_frames(frames)
        if self._size is None:
            self._open(arr.shape[1], arr.shape[2])
        elif arr.shape[1:3] != self._size:
            raise ValueError(f"frames are {arr.shape[2]}x{arr.shape[1]} but this video is "
                             f"{self._size[1]}x{self._size[0]}; every chunk must have the first chunk's size")
        for i in range(arr.shape[0]):
            frame = av.VideoFrame.from_ndarray(_frame_rgb24(arr[i], self.frames_written), format="rgb24")
            frame.pts = self.frames_written
            self._out.mux(self._vs.encode(frame))
            self.frames_written += 1

    def close(self) -> Path:
        """Flush the video, mux the audio (cut or padded to the frames written) and publish the file."""
        import av

        if self._out is None:
            self.abort()
            raise ValueError("frames is empty (T = 0): nothing to write")
        try:
            self._out.mux(self._vs.encode(None))
            if self._aus is not None:
                wav = _fit_audio(self.wav, round(self.frames_written * int(self.sample_rate) / self.rate))
                af = av.AudioFrame.from_ndarray(wav, format="fltp", layout=self._aus.layout.name)  # [C, N]
                af.sample_rate, af.pts = int(self.sample_rate), 0
                self._out.mux(self._aus.encode(af))
                self._out.mux(self._aus.encode(None))
            self._out.close()
            self._out = None
            _publish(self._tmp, self.path, self.overwrite)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Stop without a file: close the encoder and remove the temporary file."""
        if self._out is not None:
            import av

            try:
                self._out.close()
            except (av.FFmpegError, OSError):  # a half-written container may fail to finalise; it is removed
                pass
            self._out = None
        if self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _exists_message(path: Path) -> str:
    return (f"{path} already exists; pass overwrite=True to replace it, or use "
            f"next_free_path({str(path)!r}) for a new name")


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished file into place atomically; without overwrite, never replace a file."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic and fails if `path` appeared meanwhile
    except FileExistsError:
        raise FileExistsError(_exists_message(path)) from None
    except OSError:  # no hard links on this filesystem
        if path.exists():
            raise FileExistsError(_exists_message(path)) from None
        os.replace(tmp, path)


def next_free_path(path: str | os.PathLike) -> Path:
    """`folder/name_00001.mp4` for `folder/name.mp4`, one above the highest number already used."""
    path = Path(path)
    pattern = re.compile(rf"^{re.escape(path.stem)}_(\d{{5,}}){re.escape(path.suffix)}$")
    used = [int(m.group(1)) for p in (path.parent.iterdir() if path.parent.is_dir() else [])
            if (m := pattern.match(p.name))]
    n = max(used, default=0) + 1
    while (cand := path.with_name(f"{path.stem}_{n:05d}{path.suffix}")).exists():
        n += 1
    return cand


def _stream_seconds(stream: Any) -> float | None:
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


def probe(path: str | os.PathLike) -> dict[str, Any]:
    """Container and stream facts: {"duration", "video": {...} | None, "audio": {...} | None}.

    Stream durations (seconds) are the ones the file declares (for mp4 the edit lists, so AAC
    priming and padding are excluded); frames counts packets when the header lacks it.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {path}")
    with av.open(str(path)) as c:
        info: dict[str, Any] = {"format": c.format.name, "video": None, "audio": None,
                                "duration": None if c.duration is None else c.duration / 1e6}
        if c.streams.video:
            vs = c.streams.video[0]
            rate = vs.average_rate or vs.guessed_rate
            info["video"] = {
                "codec": vs.codec_context.name, "width": vs.width, "height": vs.height,
                "pix_fmt": vs.codec_context.pix_fmt, "fps": float(rate) if rate else None,
                "frames": vs.frames, "duration": _stream_seconds(vs),
            }
        if c.streams.audio:
            a = c.streams.audio[0]
            info["audio"] = {
                "codec": a.codec_context.name, "sample_rate": a.rate, "channels": a.channels,
                "duration": _stream_seconds(a),
            }
        if info["video"] is not None and not info["video"]["frames"]:
            info["video"]["frames"] = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    return info


class DecodedAudio(NamedTuple):
    """What `decode_audio` returns."""

    samples: np.ndarray  # float32 [C, N] in [-1, 1]
    sample_rate: int
    offset: float  # seconds from the first video frame to the first sample (0 without a video stream)


def _open(path: Path, what: str) -> Any:
    import av

    if not path.is_file():
        raise FileNotFoundError(f"no {what.split()[-1]} file at {path}")
    try:
        return av.open(str(path))
    except av.FFmpegError as err:
        raise ValueError(f"could not read {path} as {what} ({err.__class__.__name__}: {err}); it is not a "
                         "media file FFmpeg knows, or it is damaged") from err


def decode_audio(path: str | os.PathLike) -> DecodedAudio:
    """The first audio stream of any file FFmpeg (PyAV) reads, as float32 [C, N] at its own rate,
    cut to the stream's declared duration (the encoder's trailing padding). Errors name the file:
    missing, not a media file, no audio stream (an image, a silent video), no samples."""
    import av

    path = Path(path).expanduser()
    with _open(path, "audio") as c:
        if not c.streams.audio:
            image = c.format.name == "image2" or c.format.name.endswith("_pipe")  # png_pipe, jpeg_pipe, ...
            kind = "an image" if image else "a video without sound" if c.streams.video else "not audio"
            raise ValueError(f"{path} has no audio stream ({kind}); give a recording with speech (wav, flac, ogg, "
                             "mp3, m4a, opus, or a video with sound)")
        a = c.streams.audio[0]
        start = lambda s: float(s.start_time * s.time_base) if s.start_time is not None else 0.0  # noqa: E731
        offset = start(a) - start(c.streams.video[0]) if c.streams.video else 0.0
        sr = a.rate
        resampler = av.AudioResampler(format="fltp", layout=a.layout.name, rate=sr)
        try:
            chunks = [r.to_ndarray() for f in c.decode(a) for r in resampler.resample(f)]
            chunks += [r.to_ndarray() for r in resampler.resample(None)]
        except av.FFmpegError as err:
            raise ValueError(f"could not decode the audio of {path} ({err}); the file may be damaged") from err
        declared = _stream_seconds(a)
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((a.channels, 0), np.float32)
    if declared is not None:
        samples = samples[:, : round(declared * sr)]
    if samples.shape[1] == 0:
        raise ValueError(f"{path} has an audio stream but no audio samples; re-export it")
    return DecodedAudio(np.ascontiguousarray(samples, dtype=np.float32), int(sr), offset)


def read_video(path: str | os.PathLike) -> VideoData:
    """Decode a whole file: frames uint8 [T, H, W, 3], fps, audio float32 [C, N] or None, rate.

    Audio as `decode_audio` gives it (None without an audio stream or samples). Everything is held
    in memory, once: the frames go into one array sized from the stream's frame count (grown if the
    count was short), never a list stacked afterwards (twice the memory of a long video).
    """
    import av

    path = Path(path).expanduser()
    with _open(path, "a video") as c:
        if not c.streams.video:
            raise ValueError(f"{path} has no video stream")
        has_audio = bool(c.streams.audio)
        vs = c.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate
        try:
            frames = _into_array((f.to_ndarray(format="rgb24") for f in c.decode(vs)), vs.frames)
        except av.FFmpegError as err:
            raise ValueError(f"could not decode the video of {path} ({err}); the file may be damaged") from err
    if not len(frames):
        raise ValueError(f"{path} has a video stream but no decodable frames")
    audio, sr = None, None
    if has_audio:
        try:
            audio, sr, _ = decode_audio(path)
        except ValueError as err:
            if "no audio samples" not in str(err):
                raise
    return VideoData(frames, float(rate) if rate else float("nan"), audio, sr)


def _into_array(frames: Iterator[np.ndarray], count: int) -> np.ndarray:
    """Frames of one size -> one array [T, H, W, C]; `count` (the container's, 0 when unknown) sizes it."""
    out, n = None, 0
    for frame in frames:
        if out is None:
            out = np.empty((max(int(count), 1), *frame.shape), frame.dtype)
        elif n == len(out):
            out = np.concatenate([out, np.empty_like(out[: max(len(out) // 2, 1)])])
        out[n] = frame
        n += 1
    return np.zeros((0, 0, 0, 3), np.uint8) if out is None else out[:n]


def frames_at_fps(path: Path, fps: float, max_edge: int) -> Iterator[np.ndarray]:
    """Decoded RGB uint8 frames [H, W, 3] at `fps` (for each target time k/fps from the first frame,
    the source frame shown at that time), downscaled so the longer edge is at most `max_edge`."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        w, h = stream.codec_context.width, stream.codec_context.height
        scale = min(1.0, max_edge / max(w, h))
        size = (max(2, round(w * scale)), max(2, round(h * scale)))
        opts = {"width": size[0], "height": size[1], "interpolation": "AREA" if scale < 1 else "BICUBIC"}
        prev, prev_t, t0, k, cache = None, 0.0, None, 0, None
        last_step = 1.0 / float(stream.average_rate or fps)
        for frame in c.decode(stream):
            t = float(frame.time) if frame.time is not None else (prev_t + last_step if prev is not None else 0.0)
            if t0 is None:
                t0 = t
            if prev is not None:
                last_step = max(t - prev_t, 1e-6)
                while t0 + k / fps < (prev_t + t) / 2:  # prev is the frame nearest to target k
                    cache = cache if cache is not None else prev.to_ndarray(format="rgb24", **opts)
                    yield cache
                    k += 1
            prev, prev_t, cache = frame, t, None
        while prev is not None and t0 + k / fps < prev_t + last_step / 2 + 1e-9:
            cache = cache if cache is not None else prev.to_ndarray(format="rgb24", **opts)
            yield cache
            k += 1
