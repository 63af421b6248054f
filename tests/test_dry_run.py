"""The full-size dry run on the meta device (scripts/dry_run.py) and the bugs it must catch.

The planted bugs are the ones CPU tests cannot see: a CPU tensor made inside a block, a
float32 x bf16 mix in an adapter, a reshape that only the 480p token count satisfies; each must
fail with the operation and the module named. The whole CI set of the dry run runs once here
(about 2-3 minutes on 2 cores): every row must pass, the FLOP counter must equal perf.flops, and
the memory must match what the configuration implies.
"""

import json
import os

import pytest
import torch

from fantasytalking_core.adapters.audio import AudioAttention
from fantasytalking_core.perf import RuntimeOptions, configure
from fantasytalking_core.perf.memory import ALLOCATOR_SLACK, GiB, MemoryPlan
from fantasytalking_core.perf.simulate import Simulation
from fantasytalking_core.wan.model import WanAttentionBlock
from scripts import dry_run


def _two_blocks(size: str = "480p") -> dry_run.Row:
    dit, audio = dry_run.dit_14b(blocks=2)
    return dry_run.simulate(dry_run.Row("planted"), dry_run.dit_step(dit, audio, size, batch=1, flops=False, calls=1),
                            dit=dit, audio=audio)


def test_the_two_block_14b_step_passes_unplanted():
    row = _two_blocks("720p")
    assert row.ok, row.note
    assert 1.5 < row.weights < 2.5  # 2 of 40 blocks in bf16 (0.79 GiB each) + embeddings + head + adapter


def test_a_cpu_tensor_made_inside_a_block_names_the_block(monkeypatch):
    forward = WanAttentionBlock.forward

    def planted(self, x, *args):
        return forward(self, x + torch.zeros(x.shape[-1]), *args)  # the bug: made on the CPU

    monkeypatch.setattr(WanAttentionBlock, "forward", planted)
    row = _two_blocks()
    assert not row.ok
    assert "in dit.blocks.0: " in row.note and "aten.add" in row.note
    assert "Tensor on device cpu is not on the expected device meta" in row.note


def test_a_float32_input_to_a_bf16_adapter_layer_names_the_layer(monkeypatch):
    forward = AudioAttention.forward

    def planted(self, q, cond, num_heads, backend="auto"):
        self.k_proj(cond.tokens.float())  # the bug: float32 tokens into the bf16 k_proj
        return forward(self, q, cond, num_heads, backend)

    monkeypatch.setattr(AudioAttention, "forward", planted)
    row = _two_blocks()
    assert not row.ok
    assert "in audio.audio_processor.blocks.0.cross_attn.processor.k_proj: " in row.note
    assert "aten.mm" in row.note and "same dtype, got ['torch.bfloat16', 'torch.float32']" in row.note


def test_a_reshape_right_only_at_480p_fails_at_720p_naming_the_adapter(monkeypatch):
    forward = AudioAttention.forward

    def planted(self, q, cond, num_heads, backend="auto"):
        q.view(q.shape[0] * cond.tokens.shape[1], 30 * 52, q.shape[-1])  # the bug: 480p's tokens per frame
        return forward(self, q, cond, num_heads, backend)

    monkeypatch.setattr(AudioAttention, "forward", planted)
    assert _two_blocks("480p").ok
    row = _two_blocks("720p")
    assert not row.ok
    assert "in audio.audio_processor.blocks.0.cross_attn.processor: " in row.note and "aten.view" in row.note
    assert "[21, 1560, 5120]" in row.note and "is invalid for input of size 387072000" in row.note


def test_a_read_of_a_device_value_in_a_step_is_refused_with_the_module(monkeypatch):
    forward = WanAttentionBlock.forward

    def planted(self, x, *args):
        if bool(x.abs().amax() > 1e4):  # the bug: a device-to-host sync in every block
            x = x.clamp(-1e4, 1e4)
        return forward(self, x, *args)

    monkeypatch.setattr(WanAttentionBlock, "forward", planted)
    row = _two_blocks()
    assert not row.ok and "a value of a device tensor is read" in row.note and "in dit.blocks.0;" in row.note


def test_bytes_alive_follow_allocations_views_and_frees():
    with Simulation() as sim:
        a = torch.empty(1024, device="meta")  # 4 KiB
        view = a[10:]
        b = torch.empty(256, device="meta", dtype=torch.bfloat16)  # 512 B
        assert sim.resident() == 4096 + 512
        del a
        assert sim.resident() == 4096 + 512  # the view keeps the storage
        del view, b
        assert sim.resident() == 0
        assert sim.peak.bytes == 4096 + 512
        host = torch.empty(8, device="meta").cpu()  # a device -> host copy: zeros that hold one element
        assert host.device.type == "cpu" and host.shape == (8,) and host.stride() == (0,) and sim.host_copies == 1


def test_memory_plan_chooses_the_fewest_swapped_blocks_that_fit():
    plan = MemoryPlan(weights=40 * GiB, per_block=GiB, activations=4 * GiB, blocks=40)
    assert plan.peak(0) == 44 * GiB and plan.peak(10) == 36 * GiB  # 2 streamed copies (running + prefetched)
    assert plan.swap_for(80 * GiB) == 0
    # 40 - N resident + 2 streamed + 4 activations + 1 slack <= 24  ->  N >= 23
    assert plan.swap_for(24 * GiB) == 23 and plan.peak(23) + ALLOCATOR_SLACK <= 24 * GiB < plan.peak(22) + ALLOCATOR_SLACK
    assert plan.swap_for(5 * GiB) is None


def test_auto_block_swap_is_resolved_at_the_first_forward_and_none_off_gpu():
    from _factories import tiny_wan, wan_inputs

    model = tiny_wan()
    inputs = wan_inputs(model.cfg)
    ref = model(**inputs)
    rt = configure(model, RuntimeOptions(block_swap="auto"))
    torch.testing.assert_close(model(**inputs), ref, atol=0, rtol=0)
    assert rt.swap is None  # a CPU has no card to fit
    with pytest.raises(ValueError, match="or 'auto'"):
        RuntimeOptions(block_swap="some")


def test_the_dry_run_ci_set_passes_with_flops_and_memory_as_computed(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert dry_run.main(["--json", str(out)]) == 0, capsys.readouterr().out[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    assert all(r["ok"] for r in rows.values())
    for name in ("dit 512 b1 bf16", "dit 720p bf16"):  # the counter and the analytic count agree
        assert rows[name]["flops"] == pytest.approx(rows[name]["analytic"], rel=1e-3)
    # weights: 16.4e9 DiT parameters + the adapter's 0.84e9, in bf16
    assert 31.5 < rows["dit 512 b1 bf16"]["weights"] < 32.5
    assert rows["fp8 e4m3fn 480p"]["weights"] < 0.55 * rows["dit 512 b1 bf16"]["weights"]
    swap40, swap23 = rows["block swap 40 512 b1"], rows["block swap 23 512 b1"]
    assert swap40["weights"] < 1 and 13 < swap23["weights"] < 15  # the swapped blocks hold no device memory
    assert swap23["peak"] - swap40["peak"] == pytest.approx(17 * 0.79, abs=0.5)  # 17 more blocks resident
    assert rows["dit 720p b1 bf16"]["peak"] < rows["dit 720p bf16"]["peak"]


@pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="set COMFYUI_PATH to a ComfyUI tree with its venv in "
                    ".venv: core's WanModel is simulated in that venv (no host in CI)")
def test_core_wan_model_with_fantasytalking_attached_on_the_simulated_gpu(capsys):
    assert dry_run.main(["--only", "none", "--comfyui", os.environ["COMFYUI_PATH"]]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "core WanModel bf16 (4 blocks) 480p | " in out and "core WanModel fp8 e4m3fn (4 blocks) 480p | " in out


def test_the_cli_passes_block_swap_auto_to_the_runtime():
    from fantasytalking_core.__main__ import runtime_options

    assert runtime_options({"block_swap": "auto"}, 30).block_swap == "auto"
    assert runtime_options({"block_swap": 12}, 30).block_swap == 12
