"""The trainer on the tiny dataset: the forward matches inference's adapter attachment, gradient
checkpointing changes nothing, a clip is overfit, a crashed run resumes on the same loss curve,
a 2-process gloo run (torchrun, FSDP2) equals 1 process accumulating 2 micro-steps, exports load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _training_helpers import copy_dataset, one_thread, tiny_dataset, tiny_train_config  # noqa: F401 (fixture)
from fantasytalking_core.adapters import attach_adapters
from fantasytalking_core.checkpoints import load_adapters, load_wan
from training import checkpointing
from training.config import StageConfig
from training.dataset import PieceDataset, collate
from training.export import ADAPTER_FILE, DIT_FILE, LORA_FILE, read_checkpoint
from training.export import main as export_main
from training.model import TalkingModel, build_model, checkpoint_blocks
from training.train import make_inputs, train

REPO = Path(__file__).resolve().parents[1]


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl, as a user reads them (one JSON object a line)."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, speech) -> Path:
    return tiny_dataset(tmp_path_factory, speech)[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(dataset: Path, positions=(0,), **loss):
    from training.config import LossConfig

    ds = PieceDataset(str(dataset), seed=0, loss=LossConfig(**loss))
    return collate([ds[(p, p % len(ds))] for p in positions])


def _exports(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for name in (ADAPTER_FILE, DIT_FILE, LORA_FILE):
        if (run_dir / "export" / name).is_file():
            out.update({f"{name}:{k}": v for k, v in load_file(str(run_dir / "export" / name)).items()})
    return out


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_forward_is_inference_attachment_with_lambdas(dataset):
    cfg = tiny_train_config(dataset, Path("unused")).model
    model = build_model(cfg)
    for p in model.parameters():  # untrained k/v projections are zero: make every adapter matter
        torch.nn.init.normal_(p, std=0.05) if p.dim() > 1 and p.abs().sum() == 0 else None
    batch = _batch(dataset, positions=(3, 4))
    stage = StageConfig("s2", 1, "frame", True)
    inputs, _, _, _ = make_inputs(batch, stage, 0.2, torch.device("cpu"))
    inputs["keep_audio"] = torch.tensor([1.0, 0.0])
    inputs["keep_image"] = torch.tensor([1.0, 1.0])
    with torch.no_grad():
        got = model(**inputs, audio_mode="frame")
        from fantasytalking_core.wan import WanConfig, WanModel

        ref_dit = WanModel(WanConfig.tiny())  # the same weights, no adapters attached
        ref_dit.load_state_dict(model.dit.state_dict())
        audio, identity, motion = model.audio, model.identity, model.motion
        from fantasytalking_core.adapters import MotionAdapter

        for row, a_scale in ((0, 1.0), (1, 0.0)):
            sl = slice(row, row + 1)
            cond = audio.condition(inputs["audio_features"][sl], 17, mode="frame")
            omegas = MotionAdapter.condition(inputs["omegas"][sl, 0], inputs["omegas"][sl, 1])
            with attach_adapters(ref_dit, audio=audio, identity=identity, motion=motion) as att:
                with att.conditioned(audio=cond, audio_scale=a_scale, identity=identity.condition(
                        inputs["face_embedding"][sl]), id_scale=0.5, motion=omegas):
                    want = ref_dit(inputs["x_t"][sl], inputs["timestep"][sl], inputs["context"][sl],
                                   inputs["clip_fea"][sl], inputs["y"][sl])
            assert torch.allclose(got[sl], want, atol=1e-5), row
        no_audio = model(**{**inputs, "keep_audio": torch.zeros(2)}, audio_mode="frame")
        assert torch.allclose(no_audio[1], got[1], atol=1e-6) and not torch.allclose(no_audio[0], got[0], atol=1e-4)


def test_inputs_apply_the_dropout_per_sample(dataset):
    batch = _batch(dataset, positions=(0, 1))
    batch["keep_image"] = torch.tensor([0.0, 1.0])
    batch["keep_prompt"] = torch.tensor([1.0, 0.0])
    batch["p"] = torch.tensor([0.1, 0.5])
    inputs, target, mask, use = make_inputs(batch, StageConfig("s2", 1, "frame", True), 0.2, torch.device("cpu"))
    assert float(inputs["clip_fea"][0].abs().max()) == 0 and torch.equal(inputs["clip_fea"][1], batch["clip_fea"][1])
    assert float(inputs["y"][0, 4:].abs().max()) == 0 and torch.equal(inputs["y"][1, 4:], batch["first_latent"][1])
    from fantasytalking_core.segments import i2v_mask

    assert torch.equal(inputs["y"][:, :4], i2v_mask(17, 16, 16).expand(2, -1, -1, -1, -1))
    assert torch.equal(inputs["context"][0], batch["text"][0]) and torch.equal(inputs["context"][1], batch["null_text"][1])
    assert use.tolist() == [False, True]  # p > eta
    s = batch["sigma"].view(-1, 1, 1, 1, 1)
    assert torch.allclose(inputs["x_t"], (1 - s) * batch["latents"] + s * batch["noise"])
    assert torch.equal(target, batch["noise"] - batch["latents"]) and torch.equal(inputs["timestep"], batch["sigma"] * 1000)
    _, _, _, stage1 = make_inputs(batch, StageConfig("s1", 1, "global", False), 0.2, torch.device("cpu"))
    assert not stage1.any()


def test_gradient_checkpointing_gives_the_same_gradients(dataset):
    """Also when backward runs on another thread (as autograd's CUDA threads do): the recomputed
    blocks see the forward's conditions, not the other thread's empty ones."""
    import threading

    cfg = tiny_train_config(dataset, Path("unused")).model
    batch = _batch(dataset, positions=(5,))
    grads = []
    for ckpt in (False, True):
        model = build_model(cfg)
        if ckpt:
            checkpoint_blocks(model)
        inputs, target, _, _ = make_inputs(batch, StageConfig("s2", 1, "frame", True), 0.2, torch.device("cpu"))
        loss = (model(**inputs, audio_mode="frame") - target).pow(2).mean()
        worker = threading.Thread(target=loss.backward)
        worker.start()
        worker.join()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 100
    assert any("audio_processor" in k for k in grads[0]) and any("k_id" in k for k in grads[0])
    assert _max_diff(grads[0], grads[1]) < 1e-6


def test_dropped_adapters_still_run(dataset):
    """FSDP ranks must run the same modules: a micro-batch with everything dropped still calls them."""
    model = build_model(tiny_train_config(dataset, Path("unused")).model)
    calls = []
    model.audio.processor(0).register_forward_hook(lambda *a: calls.append("audio"))
    model.identity.blocks[1].k_id.register_forward_hook(lambda *a: calls.append("identity"))
    inputs, _, _, _ = make_inputs(_batch(dataset, positions=(2,)), StageConfig("s1", 1, "global", False), 0.2,
                                  torch.device("cpu"))
    with torch.no_grad():
        dropped = model(**{**inputs, "keep_audio": torch.zeros(1), "keep_image": torch.zeros(1)}, audio_mode="global")
    assert calls == ["audio", "identity"] and torch.isfinite(dropped).all()


def _eval_loss(model: TalkingModel, dataset: Path) -> float:
    """Mean flow-matching loss of clip 0 at fixed noise levels and noises, nothing dropped."""
    losses = []
    for pos, sigma in ((10**6, 0.3), (10**6 + 1, 0.6), (10**6 + 2, 0.9)):
        batch = _batch(dataset, positions=(pos,), drop_image=0.0, drop_audio=0.0, drop_prompt=0.0)
        batch["sigma"] = torch.tensor([sigma])
        inputs, target, _, _ = make_inputs(batch, StageConfig("s1", 1, "global", False), 0.2, torch.device("cpu"))
        with torch.no_grad():
            losses.append(float((model(**inputs, audio_mode="global") - target).pow(2).mean()))
    return sum(losses) / len(losses)


def test_overfit_one_clip(dataset, tmp_path):
    one = copy_dataset(dataset, tmp_path / "one", keep=1)
    cfg = tiny_train_config(one, tmp_path / "run", stage1=50, stage2=1, **{
        "optim.lr": 2e-3, "optim.warmup_steps": 5, "checkpoint.every": 100,
        "loss.drop_image": 0.0, "loss.drop_audio": 0.0, "loss.drop_prompt": 0.0})
    before = _eval_loss(build_model(cfg.model), one)
    summary = train(cfg)
    curve = [m["loss"] for m in read_metrics(tmp_path / "run") if m["stage"] == "s1"]
    assert len(curve) == 50 and summary["exported"]
    first, last = sum(curve[:10]) / 10, sum(curve[-10:]) / 10
    assert last < 0.6 * first, (first, last)  # measured: 1.36 -> 0.55
    # the exported files load with the core loaders and give the trained model
    run = tmp_path / "run" / "export"
    modules, extra = load_adapters(run / ADAPTER_FILE)
    assert set(modules) == {"audio", "identity", "motion"} and extra["motion_normalization"]["source"]
    trained = TalkingModel(load_wan(run / DIT_FILE).float(), audio_scale=1.0, id_scale=0.5, **modules)
    after = _eval_loss(trained, one)
    assert after < 0.5 * before, (before, after)  # measured: 1.78 -> 0.56 at fixed noise levels


def test_crash_mid_save_then_resume_continues_the_same_run(dataset, tmp_path, monkeypatch):
    kw = {"checkpoint.every": 3, "checkpoint.keep_last": 2}
    straight = tiny_train_config(dataset, tmp_path / "straight", stage1=4, stage2=4, **kw)
    train(straight)
    assert [p.name for p in checkpointing.step_dirs(tmp_path / "straight" / "checkpoints")] == \
        ["step_00000006", "step_00000008"]

    crashed = tiny_train_config(dataset, tmp_path / "crashed", stage1=4, stage2=4, **kw)
    real_replace = os.replace

    def die_publishing_step_6(src, dst):
        if str(src).endswith("step_00000006.partial"):
            raise KeyboardInterrupt("killed while saving step 6")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpointing.os, "replace", die_publishing_step_6)
    with pytest.raises(KeyboardInterrupt):
        train(crashed)
    monkeypatch.setattr(checkpointing.os, "replace", real_replace)
    ckpts = tmp_path / "crashed" / "checkpoints"
    assert (ckpts / "step_00000006.partial").is_dir()  # left behind, never read
    assert checkpointing.latest(ckpts).name == "step_00000003"
    assert len(read_metrics(tmp_path / "crashed")) == 6
    summary = train(crashed)  # resumes from step 3: steps 4-6 are redone
    assert summary["steps_run"] == 5 and not (ckpts / "step_00000006.partial").exists()
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "crashed")
    assert [m["step"] for m in b] == list(range(1, 9))
    assert [m["loss"] for m in a] == pytest.approx([m["loss"] for m in b], abs=1e-6)
    assert [m["stage"] for m in b] == ["s1"] * 4 + ["s2"] * 4
    assert _max_diff(_exports(tmp_path / "straight"), _exports(tmp_path / "crashed")) < 1e-6
    saved = read_checkpoint(ckpts / "step_00000008")
    assert json.loads((ckpts / "step_00000008" / "train_state.json").read_text())["samples_seen"] == 8
    assert "audio.proj_model.proj.weight" in saved and "dit.blocks.0.self_attn.q.weight" in saved


def _tiny_wan_file(path: Path) -> Path:
    from safetensors.torch import save_file

    from fantasytalking_core.wan import WanConfig, WanModel, init_random_

    save_file({k: v.contiguous() for k, v in init_random_(WanModel(WanConfig.tiny()), seed=7).state_dict().items()},
              str(path))
    return path


def test_two_process_gloo_run_equals_one_process_accumulating(dataset, tmp_path):
    """torchrun, 2 ranks on CPU (gloo, FSDP2): the DiT comes from a file and is loaded shard by shard."""
    wan = _tiny_wan_file(tmp_path / "wan_tiny.safetensors")
    common = ["--set", f"data.dataset={dataset}", "--set", "log.tensorboard=false", "--set", f"model.wan={wan}",
              "--set", "stages=[{name: s1, steps: 2, audio: global}, {name: s2, steps: 2, audio: frame, "
              "lip_mask_loss: true}]", "--set", "checkpoint.every=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "training.train", "--config", str(REPO / "training/configs/tiny.yaml"),
                           "--run-dir", str(tmp_path / "two"), *common],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 rank(s) on cpu" in proc.stdout and "done: step 4" in proc.stdout
    one = tiny_train_config(dataset, tmp_path / "one", stage1=2, stage2=2, **{
        "model.wan": str(wan), "optim.grad_accum": 2, "checkpoint.every": 2})
    train(one)  # one thread per process, as each torchrun rank has
    two_m, one_m = read_metrics(tmp_path / "two"), read_metrics(tmp_path / "one")
    assert [m["loss"] for m in two_m] == pytest.approx([m["loss"] for m in one_m], abs=1e-4)
    assert _max_diff(_exports(tmp_path / "two"), _exports(tmp_path / "one")) < 1e-4
    modules, extra = load_adapters(tmp_path / "two" / "export" / ADAPTER_FILE)
    assert set(modules) == {"audio", "identity", "motion"} and extra["training"]["step"] == 4
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2
    state = json.loads((tmp_path / "two" / "checkpoints" / "step_00000004" / "train_state.json").read_text())
    assert state["samples_seen"] == 8 and state["world_size"] == 2
    assert len(list((tmp_path / "two" / "checkpoints" / "step_00000004").glob("*.distcp"))) == 2  # one shard per rank
    # the 2-rank checkpoint of step 2 resumes on 1 rank (resharded) and gives the same run
    moved = tiny_train_config(dataset, tmp_path / "moved", stage1=2, stage2=2, **{
        "model.wan": str(wan), "optim.grad_accum": 2, "checkpoint.every": 2})
    assert train(moved, resume=str(tmp_path / "two" / "checkpoints" / "step_00000002"))["steps_run"] == 2
    assert [m["loss"] for m in read_metrics(tmp_path / "moved")] == pytest.approx([m["loss"] for m in one_m[2:]], abs=1e-4)
    assert _max_diff(_exports(tmp_path / "moved"), _exports(tmp_path / "one")) < 1e-4


def test_lora_layer_equals_its_merged_export():
    from fantasytalking_core.wan import WanConfig, WanModel, init_random_
    from training.lora import add_lora, lora_state

    dit = init_random_(WanModel(WanConfig.tiny()), seed=2)
    x = torch.randn(3, 256)
    plain = dit.blocks[1].ffn[0](x)
    names = add_lora(dit, ("self_attn.q", "ffn.0"), rank=4, alpha=8.0, seed=1)
    assert names == ["blocks.0.self_attn.q", "blocks.0.ffn.0", "blocks.1.self_attn.q", "blocks.1.ffn.0"]
    layer = dit.blocks[1].ffn[0]
    assert torch.allclose(layer(x), plain)  # B starts at zero: a fresh LoRA changes nothing
    assert set(WanModel(WanConfig.tiny()).state_dict()) < set(dit.state_dict())  # base keys unchanged
    torch.nn.init.normal_(layer.lora_B.weight)
    lora = lora_state({f"dit.{k}": v for k, v in dit.state_dict().items()}, alpha=8.0)
    assert len(lora) == 3 * len(names)
    key = "diffusion_model.blocks.1.ffn.0"
    a, b, alpha = lora[f"{key}.lora_A.weight"], lora[f"{key}.lora_B.weight"], float(lora[f"{key}.alpha"])
    assert a.shape == (4, 256) and b.shape == (512, 4) and alpha == 8.0
    merged = torch.nn.functional.linear(x, layer.weight + alpha / a.shape[0] * b @ a, layer.bias)  # what a loader does
    with torch.no_grad():
        assert torch.allclose(layer(x), merged, atol=1e-5)


def test_lora_run_in_bf16_trains_only_lora_and_adapters(dataset, tmp_path):
    """A frozen bf16 DiT from a file (meta init), LoRA and adapters in fp32, bf16 autocast + FSDP
    mixed precision: the path of the paper recipe, on the CPU."""
    from safetensors.torch import load_file

    wan = _tiny_wan_file(tmp_path / "wan_tiny.safetensors")
    cfg = tiny_train_config(dataset, tmp_path / "lora", stage1=2, stage2=1, **{
        "model.wan": str(wan), "model.trainable": "lora", "model.lora_rank": 4, "model.lora_alpha": 8.0,
        "model.lora_targets": ["self_attn.q", "ffn.0"], "model.precision": "bf16", "model.frozen_dtype": "bf16",
        "checkpoint.every": 10})
    train(cfg)
    losses = [m["loss"] for m in read_metrics(tmp_path / "lora")]
    assert len(losses) == 3 and all(0 < v < 10 for v in losses)
    saved = read_checkpoint(checkpointing.latest(tmp_path / "lora" / "checkpoints"))
    assert any(".lora_A." in k for k in saved) and any(k.startswith("audio.") for k in saved)
    assert not any(k.startswith("dit.") and ".lora_" not in k for k in saved)  # frozen weights are not saved
    lora = load_file(str(tmp_path / "lora" / "export" / LORA_FILE))
    assert sorted(k[: -len(".alpha")] for k in lora if k.endswith(".alpha")) == \
        sorted(f"diffusion_model.blocks.{i}.{t}" for i in range(2) for t in ("ffn.0", "self_attn.q"))
    assert float(lora["diffusion_model.blocks.1.ffn.0.lora_B.weight"].abs().max()) > 0  # moved off its zero start
    assert not (tmp_path / "lora" / "export" / DIT_FILE).exists()


def test_adapters_only_run_export_cli_and_dataset_checks(dataset, tmp_path, capsys):
    """trainable: adapters (the paper recipe): the DiT stays as loaded; the export CLI re-exports a
    checkpoint exactly; a dataset made for other encoders and a changed model are refused."""
    from safetensors.torch import load_file

    wan = _tiny_wan_file(tmp_path / "wan_tiny.safetensors")
    cfg = tiny_train_config(dataset, tmp_path / "run", stage1=1, stage2=1, **{
        "model.wan": str(wan), "model.trainable": "adapters", "checkpoint.every": 5})
    first = train(cfg, max_steps=1)  # stops after step 1 with a checkpoint, exports nothing yet
    assert first["step"] == 1 and not first["exported"] and checkpointing.latest(tmp_path / "run" / "checkpoints")
    assert train(cfg)["steps_run"] == 1  # continues at step 2
    saved = read_checkpoint(checkpointing.latest(tmp_path / "run" / "checkpoints"))
    assert saved and all(k.split(".")[0] in ("audio", "identity", "motion") for k in saved)
    assert sorted(p.name for p in (tmp_path / "run" / "export").iterdir()) == [ADAPTER_FILE]
    assert export_main(["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "again")]) == 0
    a, b = load_file(str(tmp_path / "run" / "export" / ADAPTER_FILE)), load_file(str(tmp_path / "again" / ADAPTER_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert float(a["audio.audio_processor.blocks.1.cross_attn.processor.v_proj.weight"].abs().max()) > 0  # trained
    with pytest.raises(FileExistsError):
        export_main(["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "again")])
    bad = copy_dataset(dataset, tmp_path / "bad")
    info = json.loads((bad / "dataset.json").read_text())
    (bad / "dataset.json").write_text(json.dumps({**info, "text_dim": 4096}))
    with pytest.raises(ValueError, match="has text_dim 4096 but the model takes 64"):
        train(tiny_train_config(bad, tmp_path / "bad_run"))
    other = tiny_train_config(dataset, tmp_path / "run", stage1=1, stage2=2, **{
        "model.wan": str(wan), "model.trainable": "adapters", "model.seed": 5})
    with pytest.raises(ValueError, match="trained with another model"):
        train(other)
