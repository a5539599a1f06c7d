"""The shared base of baselines that fine-tune SAM: zero-shot SAM plus a training surface.

Not a method itself (empty ``name``, so the registry skips it). The LoRA and adapter baselines
subclass :class:`FineTunedSAM`; a new fine-tuning baseline can too, in its own file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from baselines.zero_shot import ZeroShotConfig, ZeroShotSAM
from spt.artifacts import assign_named_tensors
from spt.config.schema import setting
from spt.harness.method import TrainableMethod, TrainingSample
from spt.training.losses import (
    HQ_SAM_IMPORTANCE_SAMPLE_RATIO,
    HQ_SAM_OVERSAMPLE_RATIO,
    default_loss_points,
    hq_sam_loss,
)


@dataclass(frozen=True)
class FineTunedConfig(ZeroShotConfig):
    """Zero-shot SAM's params plus HQ-SAM's point-sampled loss (SPT's defaults)."""

    loss_points: int | None = setting(
        None, "points of the point-sampled loss; null: 112 x 112, capped at one per low-res logit",
        minimum=1,
    )  # fmt: skip
    loss_oversample: float = setting(
        HQ_SAM_OVERSAMPLE_RATIO, "candidate points drawn per loss point", minimum=1
    )
    loss_importance: float = setting(
        HQ_SAM_IMPORTANCE_SAMPLE_RATIO, "share of loss points at the most uncertain logits",
        minimum=0, maximum=1,
    )  # fmt: skip


@contextlib.contextmanager
def seeded_init(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for a block that initialises weights, then restore the outer state.

    Weight init (nn.Linear's default, peft's kaiming A) draws from the global RNG; forking it keeps
    a method's initial weights a function of ``seed`` alone and leaves the caller's RNG untouched.
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class FineTunedSAM(ZeroShotSAM, TrainableMethod):
    """Zero-shot SAM plus a training surface: the base of the LoRA and adapter baselines.

    Not registered itself (empty ``name``). A subclass adds its modules to ``self.sam`` and sets
    the ``requires_grad`` flags; everything with ``requires_grad`` in :attr:`network` is what
    trains and what :meth:`trained_state` saves. The loss is SPT's (HQ-SAM point-sampled
    BCE + Dice) on the single ``final`` output.

    Loss params (SPT's defaults): ``loss_points`` 12544 (112 x 112; capped at one per low-res logit, so 1024 on tiny), ``loss_oversample`` 3,
    ``loss_importance`` 0.75.
    """

    name = ""
    config_class = FineTunedConfig

    def __init__(self, backbone, checkpoint=None, device="cpu", params=None) -> None:
        super().__init__(backbone, checkpoint, device, params)
        config = self.config
        self.init_seed = config.init_seed
        self.loss_points = config.loss_points or default_loss_points(self.spec.low_res_size)
        self.loss_oversample = config.loss_oversample
        self.loss_importance = config.loss_importance

    @property
    def network(self) -> nn.Module:
        return self.sam

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.network.parameters() if p.requires_grad)

    def training_losses(self, samples: Sequence[TrainingSample]) -> dict[str, torch.Tensor]:
        """HQ-SAM loss on the ``final`` logits, averaged over samples: {"loss", "bce", "dice"}.

        One batched encoder pass, then one decode per sample (prompt counts differ). Loss points
        are drawn from a generator seeded by ``sample.key``.
        """
        images = torch.cat([s.image for s in samples])
        embeddings = self.sam.image_encoder(images)
        totals: dict[str, torch.Tensor] = {}
        for i, sample in enumerate(samples):
            logits = self.decode(embeddings[i : i + 1], sample.prompt)["final"]
            target = sample.target.to(logits.device).expand(logits.shape[0], -1, -1, -1)
            generator = torch.Generator(device=logits.device).manual_seed(sample.key)
            bce, dice = hq_sam_loss(
                logits, target, generator, self.loss_points, self.loss_oversample,
                self.loss_importance,
            )  # fmt: skip
            for part, value in (("bce", bce), ("dice", dice), ("loss", bce + dice)):
                totals[part] = totals.get(part, 0.0) + value / len(samples)
        return totals

    def trained_state(self) -> dict[str, torch.Tensor]:
        """Every parameter of :attr:`network` with ``requires_grad``, detached, on CPU."""
        return {
            n: p.detach().cpu().clone()
            for n, p in self.network.named_parameters()
            if p.requires_grad
        }

    def load_trained_state(self, state: Mapping[str, torch.Tensor]) -> None:
        params = {n: p for n, p in self.network.named_parameters() if p.requires_grad}
        assign_named_tensors(params, state, f"method {self.name!r} on {self.backbone}")
