"""Reading a prepared dataset: the pieces, their order, and batches with each sample's random draws.

The data stream is a sequence of positions 0, 1, 2, ...; position p is piece `perm_e[p % N]` of
epoch e = p // N, with a fresh permutation per epoch from the run seed. Optimizer step s with
G = world * batch_size * grad_accum samples consumes positions [s*G, (s+1)*G): micro-step m of
rank r takes rows (m * world + r) * batch_size + [0, batch_size). The loader's position is thus
one number, `samples_seen`, saved in checkpoints; and one step sees the same samples with the
same draws (see losses.py) whether it runs on 1 rank accumulating 2 micro-steps or on 2 ranks.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterator

import torch

from fantasytalking_core.encoders import pad_context
from fantasytalking_core.motion import NEUTRAL, MotionNormalization

from .config import LossConfig
from .losses import draw
from .store import DatasetLayout, read_piece


@lru_cache(maxsize=4)
def _epoch_order(seed: int, n: int, epoch: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n, generator=g).tolist())


def piece_at(seed: int, n: int, position: int) -> int:
    """The piece index at stream `position`."""
    epoch, offset = divmod(position, n)
    return _epoch_order(seed, n, epoch)[offset]


class PositionPlan:
    """Batch sampler: for each micro-step, this rank's list of (position, piece index) keys."""

    def __init__(self, seed: int, num_pieces: int, world: int, rank: int, batch_size: int, grad_accum: int,
                 start: int = 0):
        self.seed, self.n, self.world, self.rank = seed, num_pieces, world, rank
        self.batch, self.accum, self.start = batch_size, grad_accum, start

    @property
    def samples_per_step(self) -> int:
        return self.world * self.batch * self.accum

    def keys(self, step_start: int, micro: int) -> list[tuple[int, int]]:
        first = step_start + (micro * self.world + self.rank) * self.batch
        return [(p, piece_at(self.seed, self.n, p)) for p in range(first, first + self.batch)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step_start = self.start
        while True:
            for micro in range(self.accum):
                yield self.keys(step_start, micro)
            step_start += self.samples_per_step


class PieceDataset(torch.utils.data.Dataset):
    """Pieces of a prepared dataset; item `(position, index)` is piece `index` with the draws of `position`."""

    def __init__(self, root: str, seed: int, loss: LossConfig):
        self.layout = DatasetLayout(root)
        self.info = self.layout.read_info()
        self.rows = self.layout.read_manifest()
        if not self.rows:
            raise ValueError(f"{self.layout.root} has no accepted pieces (see {self.layout.rejected} for why); "
                             "add videos or relax the filters of `python -m training.prepare`")
        from safetensors.torch import load_file

        self.null_text = load_file(str(self.layout.null_text))["text"].float()  # [L0, text_dim]
        self.normalization = MotionNormalization.from_dict(self.info["motion_normalization"])
        self.seed, self.loss = seed, loss

    def __len__(self) -> int:
        return len(self.rows)

    def omegas(self, raw: torch.Tensor) -> torch.Tensor:
        """motion_raw [2] (NaN = not measured) -> [omega_l, omega_b] with the dataset's normalisation."""
        raw_l, raw_b = (float(v) for v in raw)
        return torch.tensor([NEUTRAL if math.isnan(raw_l) else self.normalization.omega_l(raw_l),
                             NEUTRAL if math.isnan(raw_b) else self.normalization.omega_b(raw_b)])

    def __getitem__(self, key: tuple[int, int]) -> dict:
        position, index = key
        row = self.rows[index]
        t, _ = read_piece(self.layout.root / row["file"])
        d = draw(self.seed, position, tuple(t["latents"].shape), self.loss)
        return {
            "position": position, "clip_id": row["clip_id"],
            "latents": t["latents"].float(), "first_latent": t["first_latent"].float(),
            "clip_fea": t["clip_fea"].float(), "text": t["text"].float(), "null_text": self.null_text,
            "audio": t["audio"].float(), "lip_mask": t["lip_mask"].float(),
            "face_embedding": t["face_embedding"].float(), "omegas": self.omegas(t["motion_raw"]),
            "sigma": d.sigma, "noise": d.noise, "keep_image": d.keep_image, "keep_audio": d.keep_audio,
            "keep_prompt": d.keep_prompt, "p": d.p,
        }


def collate(samples: list[dict]) -> dict:
    """Stack samples of one shape; text and the empty prompt are zero-padded to one length (as the
    DiT pads them anyway)."""
    shapes = {tuple(s["latents"].shape) for s in samples}
    audio = {tuple(s["audio"].shape) for s in samples}
    if len(shapes) > 1 or len(audio) > 1:
        raise ValueError(f"a batch mixes piece shapes {sorted(shapes)} / audio {sorted(audio)}; use data.batch_size 1 "
                         "or prepare the dataset at one size and piece length")
    length = max(max(s["text"].shape[0], s["null_text"].shape[0]) for s in samples)
    out = {k: torch.stack([s[k] for s in samples]) for k in
           ("latents", "first_latent", "clip_fea", "audio", "lip_mask", "face_embedding", "omegas", "noise")}
    out["text"] = torch.stack([pad_context(s["text"], length) for s in samples])
    out["null_text"] = torch.stack([pad_context(s["null_text"], length) for s in samples])
    for k in ("sigma", "keep_image", "keep_audio", "keep_prompt", "p"):
        out[k] = torch.tensor([s[k] for s in samples], dtype=torch.float32)
    out["position"] = torch.tensor([s["position"] for s in samples], dtype=torch.long)
    out["clip_id"] = [s["clip_id"] for s in samples]
    return out


def make_loader(dataset: PieceDataset, plan: PositionPlan, num_workers: int) -> Iterator[dict]:
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=plan, collate_fn=collate, num_workers=num_workers,
                                         persistent_workers=num_workers > 0)
    return iter(loader)
