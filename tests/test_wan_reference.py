"""The whole DiT forward (modulation order, norms, RoPE, attention, head, unpatchify) against two
references on the same tiny state dict:

- a float64 transcription of Wan2.1's forward (``wan/modules/model.py``; FantasyTalking vendors the
  same model as ``diffsynth/models/wan_video_dit.py``), written here from the state dict alone with
  explicit softmax and RoPE by cos/sin per position, so it shares no code with ours;
- ComfyUI core's ``comfy.ldm.wan.model.WanModel``, run in the host's own venv as a subprocess, when
  ``COMFYUI_PATH`` points at a ComfyUI tree (``COMFYUI_PYTHON`` picks the interpreter; default
  ``$COMFYUI_PATH/.venv/bin/python``, else this one).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from _factories import tiny_wan, wan_inputs

CLIP_DIM = 1280  # ComfyUI's img_emb is hard-wired to CLIP ViT-H's 1280, so the tiny model uses it too


def _model_and_inputs():
    model = tiny_wan(seed=3, clip_dim=CLIP_DIM)
    inputs = wan_inputs(model.cfg, batch=2, frames=3, h=4, w=6, seed=5)
    inputs["t"] = torch.tensor([930.0, 120.5])
    return model, inputs


# ----------------------------------------------------------------------------- the transcription


def _wan_forward_float64(sd: dict, cfg, x, t, context, clip_fea, y) -> torch.Tensor:
    """Wan2.1 I2V forward in float64, from the state dict only (names are the checkpoint keys)."""
    W = {k: v.double() for k, v in sd.items()}

    def lin(z, name):
        return z @ W[name + ".weight"].T + W[name + ".bias"]

    def ln(z, name=None, eps=1e-6):  # LayerNorm; Wan's block norms have no affine part
        mu, var = z.mean(-1, keepdim=True), z.var(-1, unbiased=False, keepdim=True)
        out = (z - mu) / torch.sqrt(var + eps)
        return out if name is None else out * W[name + ".weight"] + W[name + ".bias"]

    def rms(z, name, eps=1e-6):
        return z / torch.sqrt(z.pow(2).mean(-1, keepdim=True) + eps) * W[name + ".weight"]

    def gelu_tanh(z):
        return 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))

    def attend(q, k, v):  # [B, L, N, D], explicit softmax
        s = torch.einsum("bqnd,bknd->bnqk", q, k) / math.sqrt(q.shape[-1])
        return torch.einsum("bnqk,bknd->bqnd", torch.softmax(s, -1), v)

    b, d, n = x.shape[0], cfg.dim, cfg.num_heads
    hd = d // n
    pe = F.conv3d(torch.cat([x, y], 1).double(), W["patch_embedding.weight"], W["patch_embedding.bias"],
                  stride=cfg.patch_size)
    f, h, w = pe.shape[2:]
    tok = pe.flatten(2).transpose(1, 2)  # [B, L, d], tokens in (f, h, w) order
    half = cfg.freq_dim // 2
    angle = t.double()[:, None] * 10000 ** (-torch.arange(half, dtype=torch.float64) / half)
    e = lin(F.silu(lin(torch.cat([angle.cos(), angle.sin()], 1), "time_embedding.0")), "time_embedding.2")
    e0 = lin(F.silu(e), "time_projection.1").view(b, 6, d)
    text = torch.zeros(b, cfg.text_len, cfg.text_dim, dtype=torch.float64)
    text[:, : context.shape[1]] = context.double()
    text = lin(gelu_tanh(lin(text, "text_embedding.0")), "text_embedding.2")
    img = ln(clip_fea.double(), "img_emb.proj.0", eps=1e-5)
    img = ln(lin(F.gelu(lin(img, "img_emb.proj.1")), "img_emb.proj.3"), "img_emb.proj.4", eps=1e-5)

    # RoPE: head_dim/2 pairs split into time, height, width bands; pair j of a band of 2*m dims
    # turns by position * 10000^(-2j / (2m))
    pairs = hd // 2
    bands = [(pairs - 2 * (pairs // 3), 0), (pairs // 3, 1), (pairs // 3, 2)]
    pos = torch.stack(torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij"), -1)
    pos = pos.reshape(-1, 3).double()
    angles = torch.cat([pos[:, axis:axis + 1] * 10000 ** (-2 * torch.arange(m, dtype=torch.float64) / (2 * m))
                        for m, axis in bands], 1)  # [L, hd/2]

    def rope(z):  # [B, L, N, hd]
        z0, z1 = z[..., 0::2], z[..., 1::2]
        c, s = angles.cos()[None, :, None], angles.sin()[None, :, None]
        return torch.stack([z0 * c - z1 * s, z0 * s + z1 * c], -1).flatten(-2)

    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        shift1, scale1, gate1, shift2, scale2, gate2 = (W[p + "modulation"] + e0).unbind(1)  # Wan's order
        a = ln(tok) * (1 + scale1[:, None]) + shift1[:, None]
        q = rope(rms(lin(a, p + "self_attn.q"), p + "self_attn.norm_q").view(b, -1, n, hd))
        k = rope(rms(lin(a, p + "self_attn.k"), p + "self_attn.norm_k").view(b, -1, n, hd))
        v = lin(a, p + "self_attn.v").view(b, -1, n, hd)
        tok = tok + lin(attend(q, k, v).flatten(2), p + "self_attn.o") * gate1[:, None]
        c = ln(tok, p + "norm3")
        q = rms(lin(c, p + "cross_attn.q"), p + "cross_attn.norm_q").view(b, -1, n, hd)
        k = rms(lin(text, p + "cross_attn.k"), p + "cross_attn.norm_k").view(b, -1, n, hd)
        v = lin(text, p + "cross_attn.v").view(b, -1, n, hd)
        ki = rms(lin(img, p + "cross_attn.k_img"), p + "cross_attn.norm_k_img").view(b, -1, n, hd)
        vi = lin(img, p + "cross_attn.v_img").view(b, -1, n, hd)
        tok = tok + lin((attend(q, k, v) + attend(q, ki, vi)).flatten(2), p + "cross_attn.o")
        a = ln(tok) * (1 + scale2[:, None]) + shift2[:, None]
        tok = tok + lin(gelu_tanh(lin(a, p + "ffn.0")), p + "ffn.2") * gate2[:, None]
    shift, scale = (W["head.modulation"] + e[:, None]).unbind(1)
    out = lin(ln(tok) * (1 + scale[:, None]) + shift[:, None], "head.head")
    pt, ph, pw = cfg.patch_size
    out = out.view(b, f, h, w, pt, ph, pw, cfg.out_dim)
    return torch.einsum("bfhwpqrc->bcfphqwr", out).reshape(b, cfg.out_dim, f * pt, h * ph, w * pw)


def test_forward_equals_a_float64_transcription_of_wan():
    model, inputs = _model_and_inputs()
    with torch.no_grad():
        ours = model(**inputs)
        ref = _wan_forward_float64(model.state_dict(), model.cfg, **inputs)
    err = ((ours.double() - ref).norm() / ref.norm()).item()
    print(f"float64 transcription vs ours: relative error {err:.3g}")
    assert err < 2e-6, err
    # the comparison can fail: swapping two modulation entries (shift <-> scale) is visible
    sd = dict(model.state_dict())
    sd["blocks.0.modulation"] = sd["blocks.0.modulation"][:, [1, 0, 2, 3, 4, 5]]
    swapped = _wan_forward_float64(sd, model.cfg, **inputs)
    assert ((swapped - ref).norm() / ref.norm()).item() > 1e-3


# ----------------------------------------------------------------------------- ComfyUI core

_COMFY_SCRIPT = r"""
import sys, torch
folder = sys.argv[1]  # run with -c from the ComfyUI folder: core's modules come first, as for its main.py
sys.argv = [sys.argv[0], "--cpu"]  # core reads its command line at import: run on the CPU
import comfy.options
comfy.options.enable_args_parsing()
import comfy.ops
from comfy.ldm.wan.model import WanModel
data = torch.load(folder + "/in.pt", weights_only=True)
cfg = data["cfg"]
model = WanModel(model_type="i2v", patch_size=tuple(cfg["patch_size"]), text_len=cfg["text_len"], in_dim=cfg["in_dim"],
                 dim=cfg["dim"], ffn_dim=cfg["ffn_dim"], freq_dim=cfg["freq_dim"], text_dim=cfg["text_dim"],
                 out_dim=cfg["out_dim"], num_heads=cfg["num_heads"], num_layers=cfg["num_layers"],
                 qk_norm=cfg["qk_norm"], cross_attn_norm=cfg["cross_attn_norm"], eps=cfg["eps"],
                 operations=comfy.ops.disable_weight_init, dtype=torch.float32)
missing, unexpected = model.load_state_dict(data["sd"], strict=False)
assert not unexpected, unexpected
assert all(k.startswith("rope_embedder") for k in missing), missing
with torch.no_grad():
    out = model(torch.cat([data["x"], data["y"]], 1), data["t"], data["context"], clip_fea=data["clip_fea"],
                transformer_options={})
torch.save(out, folder + "/out.pt")
"""


def _comfy_python(root: Path) -> str:
    given = os.environ.get("COMFYUI_PYTHON")
    if given:
        return given
    venv = root / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    return str(venv) if venv.is_file() else sys.executable


@pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="set COMFYUI_PATH to a ComfyUI tree to compare "
                                                                  "with core's WanModel")
def test_forward_equals_comfyui_cores_wan_model(tmp_path):
    root = Path(os.environ["COMFYUI_PATH"]).expanduser()
    assert (root / "comfy" / "ldm" / "wan" / "model.py").is_file(), f"{root} is not a ComfyUI tree"
    model, inputs = _model_and_inputs()
    context = torch.zeros(2, model.cfg.text_len, model.cfg.text_dim)  # core gets the text padded to 512 by its
    context[:, : inputs["context"].shape[1]] = inputs["context"]  # encoder; ours pads inside the DiT
    torch.save({"cfg": model.cfg.to_dict(), "sd": model.state_dict(), **inputs, "context": context},
               tmp_path / "in.pt")
    run = subprocess.run([_comfy_python(root), "-c", _COMFY_SCRIPT, str(tmp_path)], cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    core = torch.load(tmp_path / "out.pt", weights_only=True)
    with torch.no_grad():
        ours = model(**inputs)
    assert core.shape == ours.shape
    err = ((ours - core).norm() / core.norm()).item()
    print(f"core vs ours: relative error {err:.3g}")
    assert err < 1e-5, err
