"""SyncNet (Chung & Zisserman 2016) Sync-C / Sync-D, as joonson/syncnet_python computes them.

`SyncNet` has the module names of `SyncNetModel.S`, so `syncnet_v2.model` (a state dict) loads
into it directly. The pipeline follows `run_pipeline.py` + `SyncNetInstance.evaluate`:
video at 25 fps; one face track; per frame a box, median-filtered over 13 frames, cropped with
`crop_scale` 0.4 (pad value 110) and resized to 224x224, BGR; audio 16 kHz int16 -> MFCC
(python_speech_features defaults: 13 coefficients at 100 Hz); lip features of 5-frame windows
against audio features of the matching 20 MFCC frames; mean distance at each offset in
[-vshift, vshift]. Sync-D is the smallest mean distance, Sync-C the median minus it, the offset
the shift at the minimum (> 0: the video lags the audio).
Differences from the reference, which can move numbers slightly: face boxes come from MediaPipe
face mesh, not S3FD; frames are not re-encoded (XVID, JPEG) between steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FPS = 25
CROP_SCALE = 0.4


def _bn_relu_2d(c: int, inplace: bool = True) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.ReLU(inplace=inplace)]


def _bn_relu_3d(c: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(c), nn.ReLU(inplace=True)]


class SyncNet(nn.Module):
    """`SyncNetModel.S`: audio tower on MFCC `[N,1,13,20]`, lip tower on BGR 0..255 clips
    `[N,3,5,224,224]`; both give `[N,1024]`."""

    def __init__(self, num_layers_in_fc_layers: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1), *_bn_relu_2d(64),
            nn.MaxPool2d(kernel_size=1, stride=1),
            nn.Conv2d(64, 192, kernel_size=3, stride=1, padding=1), *_bn_relu_2d(192),
            nn.MaxPool2d(kernel_size=3, stride=(1, 2)),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), *_bn_relu_2d(384),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), *_bn_relu_2d(256),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), *_bn_relu_2d(256),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=0), *_bn_relu_2d(512, inplace=False),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, num_layers_in_fc_layers))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, num_layers_in_fc_layers))
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0), *_bn_relu_3d(96),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), *_bn_relu_3d(256),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), *_bn_relu_3d(256),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), *_bn_relu_3d(256),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), *_bn_relu_3d(256),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0), *_bn_relu_3d(512),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(x).flatten(1))  # [N,512,1,1] -> [N,1024]

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(x).flatten(1))  # [N,512,1,1,1] -> [N,1024]


# ------------------------------------------------------------------------------------ MFCC


def mel_filterbank(nfilt: int = 26, nfft: int = 512, samplerate: int = 16000) -> np.ndarray:
    """python_speech_features `get_filterbanks` `[nfilt, nfft//2+1]` (triangles on FFT bins)."""
    hz2mel = lambda hz: 2595 * np.log10(1 + hz / 700.0)  # noqa: E731
    mel2hz = lambda mel: 700 * (10 ** (mel / 2595.0) - 1)  # noqa: E731
    mels = np.linspace(hz2mel(0), hz2mel(samplerate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * mel2hz(mels) / samplerate)
    i = np.arange(nfft // 2 + 1)[None, :]
    lo, mid, hi = bins[:-2, None], bins[1:-1, None], bins[2:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where((i >= lo) & (i < mid), (i - lo) / (mid - lo), 0.0)
        down = np.where((i >= mid) & (i < hi), (hi - i) / (hi - mid), 0.0)
    return up + down


def mfcc(signal: np.ndarray, samplerate: int = 16000) -> np.ndarray:
    """`python_speech_features.mfcc(signal, samplerate)` with its defaults: 25 ms rectangular
    frames every 10 ms, pre-emphasis 0.97, 512-point power spectrum, 26 mel filters, log, DCT-II
    (orthonormal), 13 coefficients, lifter 22, c0 replaced by the log frame energy. `[frames, 13]`."""
    from scipy.fft import dct

    sig = np.asarray(signal, np.float64)
    sig = np.append(sig[0], sig[1:] - 0.97 * sig[:-1])
    flen, step = int(round(0.025 * samplerate)), int(round(0.01 * samplerate))
    n = 1 if len(sig) <= flen else 1 + int(math.ceil((len(sig) - flen) / step))
    sig = np.concatenate([sig, np.zeros((n - 1) * step + flen - len(sig))])
    frames = sig[np.arange(flen)[None, :] + step * np.arange(n)[:, None]]
    pspec = np.abs(np.fft.rfft(frames, 512)) ** 2 / 512
    energy = pspec.sum(1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    feat = pspec @ mel_filterbank(26, 512, samplerate).T
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    feat = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :13]
    feat = feat * (1 + 11.0 * np.sin(np.pi * np.arange(13) / 22))
    feat[:, 0] = np.log(energy)
    return feat


def to_int16_scale(wave: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] -> the int16 sample values ffmpeg's pcm_s16le gives, as float64."""
    return np.clip(np.round(np.asarray(wave, np.float64) * 32768.0), -32768, 32767)


# ------------------------------------------------------------------------------------ video


def indices_at_25fps(num_frames: int, fps: float) -> np.ndarray:
    """Source frame shown at each 25 fps output time (nearest earlier-or-equal, like a
    constant-rate resample); identity when fps is 25."""
    seconds = num_frames / float(fps)
    n = max(1, int(round(seconds * FPS)))
    return np.minimum(np.floor(np.arange(n) * float(fps) / FPS + 1e-6).astype(int), num_frames - 1)


def syncnet_crops(frames_rgb: np.ndarray, boxes: np.ndarray, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """BGR uint8 `[T,224,224,3]` face crops with `run_pipeline.crop_video`'s geometry from boxes
    `[T,4]` (x0, y0, x1, y1 pixels): size and centre median-filtered over 13 frames."""
    import cv2
    from scipy.signal import medfilt

    import warnings

    b = np.asarray(boxes, np.float64)
    with warnings.catch_warnings():  # clips under 13 frames: zero padding, as the reference would do
        warnings.filterwarnings("ignore", message="kernel_size exceeds volume extent")
        s = medfilt(np.maximum(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]) / 2, kernel_size=13)
        y = medfilt((b[:, 1] + b[:, 3]) / 2, kernel_size=13)
        x = medfilt((b[:, 0] + b[:, 2]) / 2, kernel_size=13)
    out = np.empty((len(frames_rgb), 224, 224, 3), np.uint8)
    cs = crop_scale
    for t, rgb in enumerate(frames_rgb):
        bs = s[t]
        bsi = int(bs * (1 + 2 * cs))
        frame = np.pad(rgb[..., ::-1], ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=(110, 110))
        my, mx = y[t] + bsi, x[t] + bsi
        face = frame[int(my - bs):int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)):int(mx + bs * (1 + cs))]
        out[t] = cv2.resize(face, (224, 224))
    return out


# ------------------------------------------------------------------------------------ scores


def calc_pdist(feat1: torch.Tensor, feat2: torch.Tensor, vshift: int) -> torch.Tensor:
    """`[N, 2*vshift+1]`: distance of video feature i to audio feature i + j - vshift (zero
    rows outside), `F.pairwise_distance` as the reference uses it."""
    win = 2 * vshift + 1
    feat2p = F.pad(feat2, (0, 0, vshift, vshift))
    idx = torch.arange(len(feat1))[:, None] + torch.arange(win)[None, :]  # [N, W]
    a = feat1[:, None, :].expand(-1, win, -1).reshape(-1, feat1.shape[1])
    return F.pairwise_distance(a, feat2p[idx].reshape(-1, feat1.shape[1])).reshape(len(feat1), win)


def offset_confidence(im_feat: torch.Tensor, cc_feat: torch.Tensor, vshift: int = 15) -> dict:
    """SyncNetInstance.evaluate's numbers from lip and audio features `[N,D]`."""
    dists = calc_pdist(im_feat, cc_feat, vshift)  # [N, W]
    mdist = dists.mean(0)  # [W]
    minval, minidx = torch.min(mdist, 0)
    return {"offset": int(vshift - minidx), "sync_c": float(torch.median(mdist) - minval),
            "sync_d": float(minval), "mean_dists": mdist.tolist()}


@torch.no_grad()
def syncnet_scores(model: SyncNet, crops_bgr: np.ndarray, wave16k: np.ndarray, vshift: int = 15,
                   batch_size: int = 20, device: str = "cpu") -> dict:
    """Sync-C, Sync-D and offset of 25 fps BGR crops `[T,224,224,3]` and 16 kHz mono audio."""
    audio = to_int16_scale(wave16k)
    cc = torch.from_numpy(mfcc(audio, 16000).T.copy()).float()[None, None]  # [1,1,13,F]
    im = torch.from_numpy(np.ascontiguousarray(crops_bgr.transpose(3, 0, 1, 2))).float()[None]  # [1,3,T,224,224]
    min_length = min(len(crops_bgr), math.floor(len(audio) / 640))
    lastframe = min_length - 5
    if lastframe < 1:
        raise ValueError(f"SyncNet needs at least 6 frames at 25 fps with audio; got {len(crops_bgr)} frames and "
                         f"{len(audio) / 16000:.2f} s of audio")
    model = model.eval().to(device)
    im_feat, cc_feat = [], []
    for i in range(0, lastframe, batch_size):
        frames = range(i, min(lastframe, i + batch_size))
        im_in = torch.cat([im[:, :, v:v + 5] for v in frames]).to(device)  # [B,3,5,224,224]
        cc_in = torch.cat([cc[:, :, :, v * 4:v * 4 + 20] for v in frames]).to(device)  # [B,1,13,20]
        im_feat.append(model.forward_lip(im_in).cpu())
        cc_feat.append(model.forward_aud(cc_in).cpu())
    out = offset_confidence(torch.cat(im_feat), torch.cat(cc_feat), vshift)
    out["windows"] = lastframe
    return out


def load_syncnet(path) -> SyncNet:
    """`syncnet_v2.model` (a state dict) -> SyncNet in eval mode; never unpickles code."""
    from pathlib import Path

    from fantasytalking_core.checkpoints import load_strict, read_state_dict

    p = Path(path)
    hint = "It is not a SyncNet state dict: expected syncnet_v2.model from joonson/syncnet_python."
    sd = read_state_dict(p)  # a weights-only pickle: never unpickles code
    model = SyncNet()
    old_bn = [k for k in model.state_dict() if k.endswith("num_batches_tracked")]  # absent from the 2016 file
    load_strict(model, sd, p, optional=old_bn, hint=hint)
    return model.eval()
