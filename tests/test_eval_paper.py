"""Paper metrics: Fréchet distance against closed forms, and FID / FVD / IDC / aesthetics through
their loaders on tiny random-weight stand-ins with the real files' interfaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation import paper as P
from evaluation import weights as W
from evaluation.config import EvalConfig
from evaluation.frechet import feature_stats, frechet_distance
from evaluation.media import EvalInput


def spd(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def sqrtm_sym(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# ------------------------------------------------------------------ Fréchet distance


def test_frechet_distance_matches_closed_forms():
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2)
    a, b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.5, 2.0])  # diagonal covariances commute
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    s1, s2 = spd(6, 0), spd(6, 1)  # general case: Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2)
    r1 = sqrtm_sym(s1)
    expected = 4.0 + np.trace(s1) + np.trace(s2) - 2 * np.trace(sqrtm_sym(r1 @ s2 @ r1))
    assert frechet_distance(np.zeros(6), s1, np.full(6, 2 / np.sqrt(6)), s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(np.ones(6), s1, np.ones(6), s1) == pytest.approx(0.0, abs=1e-9)


def test_feature_stats_use_sample_or_population_covariance():
    x = np.random.default_rng(0).normal(size=(20, 5))
    mu, cov = feature_stats(x, ddof=1)
    assert np.allclose(mu, x.mean(0)) and np.allclose(cov, np.cov(x, rowvar=False))
    assert np.allclose(feature_stats(x, ddof=0)[1], np.cov(x, rowvar=False, bias=True))
    with pytest.raises(ValueError, match="at least 2"):
        feature_stats(x[:1])
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_frechet_of_samples_approaches_the_gaussians_distance():
    rng = np.random.default_rng(3)
    s1, s2 = spd(4, 5), spd(4, 6)
    x = rng.multivariate_normal(np.zeros(4), s1, 200_000)
    y = rng.multivariate_normal(np.ones(4), s2, 200_000)
    exact = frechet_distance(np.zeros(4), s1, np.ones(4), s2)
    assert P.fid_from_features(x, y) == pytest.approx(exact, rel=0.02)


# ------------------------------------------------------------------ FID Inception


def test_fid_inception_has_pytorch_fids_layout_and_loads_strictly(tmp_path):
    from evaluation.inception import FIDInception, inception_features

    model = FIDInception()
    # torchvision's inception_v3 has 27,161,264 parameters; minus the aux head (3,326,696),
    # plus 8 more classes (1008: 8 x 2049) = 23,850,960
    assert sum(p.numel() for p in model.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    sd = model.state_dict()
    assert tuple(sd["Mixed_7c.branch_pool.conv.weight"].shape) == (192, 2048, 1, 1)
    assert tuple(sd["fc.weight"].shape) == (1008, 2048) and "Mixed_6e.branch7x7dbl_5.bn.running_var" in sd
    torch.save(sd, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    loaded = W.load_inception(W.find_model("fid", tmp_path))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in sd.items())
    frames = np.random.default_rng(0).integers(0, 255, (1, 48, 64, 3), dtype=np.uint8)
    feats = inception_features(loaded, frames)
    assert feats.shape == (1, 2048) and feats.dtype == torch.float64 and bool((feats >= 0).all())  # after ReLU + pool
    seen = []
    stub = lambda x: seen.append(x) or x.mean(dim=(2, 3))  # noqa: E731  what the network is given
    inception_features(stub, frames)
    assert torch.allclose(seen[0], torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)  # RGB 0..1 NCHW
    del sd["fc.bias"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not pytorch-fid's FID Inception"):
        W.load_inception(tmp_path / "bad.pth")


# ------------------------------------------------------------------ stand-ins with the real interfaces


class TinyI3D(torch.nn.Module):
    """StyleGAN-V's I3D call signature; features [B,400] from pooled pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(12, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        v = x.float()
        if rescale:
            v = v / 127.5 - 1
        if resize:
            v = F.interpolate(v, size=(v.shape[2], 8, 8), mode="trilinear", align_corners=False)
        f = self.proj(F.adaptive_avg_pool3d(v, (4, 1, 1)).flatten(1))
        return f if return_features else f.softmax(-1)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A models folder with tiny stand-ins under the real file names."""
    import warnings

    from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

    d = tmp_path_factory.mktemp("eval_models")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(TinyI3D()).save(str(d / "i3d_torchscript.pt"))
    vit = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=224, patch_size=16, layer_norm_eps=1e-6)
    ViTModel(vit, add_pooling_layer=False).save_pretrained(d / "dino-vitb16")
    clip = CLIPConfig(text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "vocab_size": 100},
                      vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "image_size": 224, "patch_size": 32},
                      projection_dim=768)
    CLIPModel(clip).save_pretrained(d / "clip-vit-large-patch14")  # the full CLIP folder, as openai ships it
    torch.save(torch.nn.Linear(768, 1).state_dict(), d / "sa_0_4_vit_l_14_linear.pth")
    return d


def video(n: int = 6, h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, h, w, 3), dtype=np.uint8)


def test_fvd_uses_stylegan_v_call_and_population_covariance(models_dir):
    models = P.PaperModels(models_dir)
    a, b = video(48, seed=1), video(48, seed=2)
    fa, fb = P.fvd_features(models, a, 16), P.fvd_features(models, b, 16)
    clips = torch.from_numpy(a.reshape(3, 16, 64, 96, 3)).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        ref = models.get("fvd")(clips, rescale=True, resize=True, return_features=True).double().numpy()
    assert fa.shape == (3, 400) and np.allclose(fa, ref)
    mu1, c1 = fa.mean(0), np.cov(fa, rowvar=False, bias=True)
    mu2, c2 = fb.mean(0), np.cov(fb, rowvar=False, bias=True)
    assert P.fvd_from_features(fa, fb) == pytest.approx(frechet_distance(mu1, c1, mu2, c2), rel=1e-6)
    with pytest.raises(ValueError, match="need 16 frames"):
        P.video_clips(a[:10], 16)


def test_idc_is_vbench_subject_consistency_on_dino(models_dir):
    model = P.PaperModels(models_dir).get("idc")
    frames = video(5, 64, 96)
    feats = P.dino_features(model, frames)
    with torch.no_grad():  # VBench: short side to 224 (64x96 -> 224x336), ImageNet mean/std on 0..255
        x = F.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(224, 336), mode="bilinear",
                          align_corners=False, antialias=True)
        x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        ref = F.normalize(model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[:, 0], dim=-1)
    assert torch.allclose(feats, ref, atol=1e-5)
    sim, first, former = 0.0, None, None  # VBench's loop
    for i, f in enumerate(ref):
        if i == 0:
            first = f[None]
        else:
            sim += (max(0.0, F.cosine_similarity(former, f[None]).item())
                    + max(0.0, F.cosine_similarity(first, f[None]).item())) / 2
        former = f[None]
    assert P.subject_consistency(feats) == pytest.approx(sim / (len(ref) - 1), abs=1e-6)
    assert P.subject_consistency(P.dino_features(model, np.stack([frames[0]] * 3))) == pytest.approx(1.0, abs=1e-6)


def test_aesthetic_is_the_laion_head_on_clip_embeddings(models_dir, tmp_path):
    models = P.PaperModels(models_dir)
    clip, head = models.get("clip"), models.get("aesthetic")
    assert head.kind == "linear"
    frames = video(3, 64, 96)
    emb = P.clip_embeddings(clip, frames)
    with torch.no_grad():  # bicubic short side 224 -> 224x336, centre crop (left 56), /255, CLIP mean/std
        x = F.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(224, 336), mode="bicubic",
                          align_corners=False, antialias=True)[..., 56:280] / 255
        x = (x - torch.tensor(P.CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(P.CLIP_STD).view(1, 3, 1, 1)
        ref = F.normalize(clip(pixel_values=x).image_embeds, dim=-1)
        lin = torch.load(models_dir / "sa_0_4_vit_l_14_linear.pth", weights_only=True)
        score = (ref @ lin["weight"].T + lin["bias"]).mean()
    assert emb.shape == (3, 768) and torch.allclose(emb, ref, atol=1e-5)
    res = P.evaluate_paper(EvalInput(frames, 25.0), None, models, EvalConfig(paper_metrics=("aesthetic",)))
    assert res["aesthetic"]["value"] == pytest.approx(float(score), abs=1e-5)
    assert res["aesthetic"]["aesthetic_vbench"] == pytest.approx(float(score) / 10, abs=1e-6)
    mlp = W.AestheticHead("mlp")
    torch.save(mlp.state_dict(), tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    assert W.load_aesthetic_head(tmp_path / "sac+logos+ava1-l14-linearMSE.pth").kind == "mlp"
    assert sorted(mlp.state_dict())[:2] == ["layers.0.bias", "layers.0.weight"] and "layers.7.weight" in mlp.state_dict()
    torch.save({"w": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="not a LAION aesthetic head"):
        W.load_aesthetic_head(tmp_path / "x.pth")


def test_every_paper_metric_says_what_is_missing(tmp_path, models_dir):
    inp = EvalInput(video(20), 25.0)
    res = P.evaluate_paper(inp, None, P.PaperModels(tmp_path), EvalConfig())
    assert not any(r["available"] for r in res.values())
    assert "no audio" in res["sync"]["reason"] and "--real" in res["fid"]["reason"]
    assert "dino-vitb16" in res["idc"]["reason"] and str(tmp_path.resolve()) in res["idc"]["reason"]
    assert "sa_0_4_vit_l_14_linear.pth" in res["aesthetic"]["reason"]
    real = EvalInput(video(20, seed=9), 25.0)
    res = P.evaluate_paper(inp, None, P.PaperModels(tmp_path), EvalConfig(paper_metrics=("fid", "fvd")), real)
    assert "pt_inception-2015-12-05-6726825d.pth" in res["fid"]["reason"] and "i3d_torchscript.pt" in res["fvd"]["reason"]
    ok = P.evaluate_paper(inp, None, P.PaperModels(models_dir), EvalConfig(paper_metrics=("idc", "fvd"),
                                                                            fvd_clip_frames=8), real)
    assert ok["idc"]["available"] and 0 <= ok["idc"]["value"] <= 1 and ok["fvd"]["clips"] == [2, 2]
    assert P.paper_headline(ok) == {"sync_c": None, "sync_d": None, "sync_offset": None, "fid": None,
                                    "fvd": ok["fvd"]["value"], "idc": ok["idc"]["value"], "aesthetic": None}


def test_a_folder_missing_weights_is_refused_not_filled_with_random_values(tmp_path):
    import json

    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(tmp_path / "dino-vitb16")
    conf = json.loads((tmp_path / "dino-vitb16" / "config.json").read_text())
    conf["num_hidden_layers"] = 2  # the config asks for a layer the weights do not have
    (tmp_path / "dino-vitb16" / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ValueError, match="does not hold all weights"):
        W.load_dino(tmp_path / "dino-vitb16")
