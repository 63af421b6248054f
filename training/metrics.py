"""Training metrics: `RUN/metrics.jsonl` (one line per step, rank 0), a printed line every few steps,
and TensorBoard events when the `tensorboard` package is installed.

On resume the lines after the checkpoint's step are dropped, so the file holds one loss curve
without the steps that the killed run did and the resumed run redoes.
"""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool, print_every: int, tensorboard: bool):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled, self.print_every = enabled, print_every
        self.writer = None
        self.note = ""
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.note = 'TensorBoard events off: `pip install "tensorboard>=2.14"` to get them (metrics.jsonl has every step)'
            else:
                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def truncate(self, last_step: int) -> None:
        """Keep the lines of steps <= last_step (a resumed run redoes the later ones)."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [line for line in self.path.read_text().splitlines() if line.strip()
                and json.loads(line)["step"] <= last_step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            stage = values.get("stage", "")
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(f"{k}/{stage}" if k == "loss" else k, v, step)
        if step % self.print_every == 0 or step == 1:
            shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
            print(f"step {step} {shown}", flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
