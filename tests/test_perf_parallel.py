"""Ulysses sequence parallel: two gloo processes under torchrun give the single-process output.

The test launches this very file with ``torchrun --standalone --nproc-per-node 2``; run as a
script, each rank builds the same tiny model, attaches frame-level audio and runs it with
``seq_parallel=True``, then saves what it got.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _factories import tiny_audio, tiny_wan, wan_inputs
from fantasytalking_core.adapters import AudioCondition, attach_adapters
from fantasytalking_core.perf import RuntimeOptions, StepCacheConfig, configure

FRAMES = 5  # 5 latent frames over 2 ranks: 3 and 2, so the uneven split is exercised


def _setup():
    model = tiny_wan(num_layers=2)
    audio = tiny_audio(model.cfg)
    inputs = wan_inputs(model.cfg, batch=2, frames=FRAMES, h=4, w=4)
    g = torch.Generator().manual_seed(11)
    cond = AudioCondition(torch.randn(1, FRAMES, 6, 32, generator=g), torch.tensor([6, 5, 4, 3, 6]))
    return model, audio, inputs, cond


def _outputs(options: RuntimeOptions) -> list[torch.Tensor]:
    """Plain call, then two calls of a sampling run with the step cache (the second one skipped)."""
    model, audio, inputs, cond = _setup()
    scale = torch.tensor([1.0, 0.0])  # batched guidance rows: audio on, audio off
    with torch.no_grad(), attach_adapters(model, audio=audio) as att, att.conditioned(audio=cond, audio_scale=scale):
        first = configure(model, options)(**inputs)
        runtime = configure(model, options.with_(step_cache=StepCacheConfig(threshold=1e9)))
        runs = [runtime(**{**inputs, "t": torch.tensor([t, t])}) for t in (800.0, 780.0)]
        assert runtime.cache.skipped == 1
    return [first, *runs]


def _worker(out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    outs = _outputs(RuntimeOptions(seq_parallel=True, fast_rope=True))
    torch.save(outs, Path(out_dir) / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           __file__, str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ref = _outputs(RuntimeOptions(fast_rope=True))
    for rank in range(2):
        outs = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for got, want in zip(outs, ref):
            assert got.shape == want.shape == (2, 16, FRAMES, 4, 4)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_frame_split_and_errors_without_torchrun():
    from fantasytalking_core.perf.parallel import SequenceParallel

    with pytest.raises(RuntimeError, match="torchrun"):
        configure(tiny_wan(), RuntimeOptions(seq_parallel=True))
    sp = SequenceParallel.__new__(SequenceParallel)  # the split is plain arithmetic: no process group needed
    sp.world = 4
    assert sp.frame_split(21) == [(0, 6), (6, 11), (11, 16), (16, 21)]
    sp.world = 2
    assert sp.frame_split(5) == [(0, 3), (3, 5)]
    with pytest.raises(ValueError, match="at least 2 latent frames"):
        sp.frame_split(1)


if __name__ == "__main__":
    _worker(sys.argv[1])
