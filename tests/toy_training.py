"""A toy trainable model and data for the engine tests; also runnable as a script (torchrun).

    python tests/toy_training.py OUT_DIR EPOCHS BATCH [--resume] [--sleep S]

writes OUT_DIR/final.pt with the trained tensors.
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

from spt.training.engine import TrainConfig, sample_key, train, trainable_state

IDS = [f"toy/img{i:02d}" for i in range(12)]


class ToyModel(nn.Module):
    """A frozen projection followed by a trainable one: the shape of a LoRA-style method."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.frozen = nn.Linear(6, 8)
        self.head = nn.Linear(8, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.frozen.requires_grad_(False)

    def forward(self, batch):
        pred = self.head(torch.tanh(self.frozen(batch["x"])))
        loss = ((pred - batch["y"]) ** 2).mean()
        return {"loss": loss, "mse": loss.detach()}


def make_sample_for(config: TrainConfig, sleep: float = 0.0):
    def make_sample(index: int, epoch: int):
        if sleep:
            time.sleep(sleep)
        # A fixed input per image plus a little per-epoch noise, as augmentation would add.
        x = torch.randn(6, generator=torch.Generator().manual_seed(sample_key(0, IDS[index], 0)))
        noise = torch.Generator().manual_seed(sample_key(config.seed, IDS[index], epoch))
        x = x + 0.05 * torch.randn(6, generator=noise)
        return {"x": x, "y": 0.3 * torch.tanh(x[:1] - x[1:2])}

    return make_sample


def collate(samples):
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def run(out_dir, epochs, batch, resume=False, sleep=0.0, stop_after=None):
    config = TrainConfig(epochs=epochs, batch_size=batch, lr=0.05, lr_step_epochs=2, seed=3)
    model = ToyModel()
    result = train(
        model, IDS, make_sample_for(config, sleep), collate, config, out_dir,
        resume=resume, stop_after_epochs=stop_after, progress=False,
    )  # fmt: skip
    return model, result


if __name__ == "__main__":
    out, epochs, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sleep = float(sys.argv[sys.argv.index("--sleep") + 1]) if "--sleep" in sys.argv else 0.0
    model, _ = run(out, epochs, batch, resume="--resume" in sys.argv, sleep=sleep)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save(trainable_state(model), f"{out}/final.pt")
    if dist.is_initialized():
        dist.destroy_process_group()
