"""One frozen dataclass per section of params.yaml. The defaults are the code's defaults (what
a command uses with no params file); params.yaml documents every one of them, and
tests/test_config.py fails when the two disagree on which keys exist.

Checks here are those of the value alone (type, range, a non-empty list, a pair in order).
Names resolved by other layers are checked there, once, when they are resolved: prompt-mode
names (:mod:`spt.harness.prompts`), dataset layouts and their options (:mod:`spt.data.config`),
method names and each method's declared params (:mod:`spt.harness.method`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from spt.config.modes import mode_problems
from spt.config.schema import MAX_SEED, setting

#: The evaluation's prompt modes (spt.harness.prompts.DEFAULT_PROMPT_MODES; a test keeps the two
#: equal: this layer may not import the harness).
EVALUATE_PROMPT_MODES = (
    "box", "points-1", "points-3", "points-5", "points-pn", "coarse", "coarse-box",
)  # fmt: skip
#: The training prompt modes (spt.training.samples.TRAIN_PROMPT_MODES, kept equal by a test).
TRAIN_PROMPT_MODES = ("box", "points-1", "points-3", "points-5", "coarse")
#: The coarse mask prompt's logit magnitude (spt.harness.prompts.DEFAULT_MASK_PROMPT_LOGIT).
MASK_PROMPT_LOGIT = 10.0


@dataclass(frozen=True)
class SyntheticSize:
    """``data.synthetic``: the size of each synthetic twin."""

    normal_train: int = setting(3, "normal images per category in train", minimum=1)
    normal_test: int = setting(2, "normal images per category in test", minimum=1)
    # >= 2: defect images on both sides of the split
    defects_per_type: int = setting(3, "defect images per (category, defect type)", minimum=2)


@dataclass(frozen=True)
class DataSection:
    """``data``: reading the raw datasets and preparing manifests (`spt prepare`)."""

    raw_root: str = setting(
        "data", "raw-data folder; a dataset's default root is `<raw_root>/<name>`"
    )
    prepared_root: str = setting("work/prepared", "where `spt prepare` writes manifests")
    seed: int = setting(0, "split protocol seed", minimum=0, maximum=MAX_SEED)
    train_fraction: float = setting(
        0.5, "share of each defect stratum sent to train when the publisher gave no split",
        minimum=0, maximum=1, min_open=True, max_open=True,
    )  # fmt: skip
    workers: int = setting(0, "decoding/hashing processes; 0 = one per CPU core", minimum=0)
    min_defect_pixels: int = setting(
        10, "a defect mask with fewer foreground pixels is excluded (annotation residue)",
        minimum=1, maximum=1_000_000,
    )  # fmt: skip
    synthetic: SyntheticSize = setting(SyntheticSize, "size of the synthetic twins")
    datasets: dict[str, Any] = setting(
        {}, "name: `{layout, root, mask_convention, <layout options>}` (checked by spt.data.config)"
    )


@dataclass(frozen=True)
class PipelineSection:
    """``pipeline``: what `dvc repro` runs and the commands' shared defaults."""

    backbone: str = setting("tiny", "SAM backbone: tiny, vit_b, vit_l, vit_h")
    sam_checkpoint: str | None = setting(
        None, "SAM checkpoint file; null: the one `spt backbones` lists"
    )
    prepared_roots: tuple[str, ...] = setting(
        ("work/prepared",), "folders holding `<dataset>/manifest.csv`, searched in order",
        nonempty=True,
    )  # fmt: skip
    datasets: tuple[str, ...] = setting((), "datasets every stage trains and evaluates on")
    optional_datasets: tuple[str, ...] = setting(
        (), "datasets included when prepared (real data present), else left out"
    )
    trained_methods: tuple[str, ...] = setting(
        (), "methods with train@ and evaluate@ stages (dvc.yaml's matrix)"
    )
    seeds: tuple[int, ...] = setting(
        (0,),
        "training and prompt seeds, one run folder each",
        minimum=0,
        maximum=MAX_SEED,
        nonempty=True,
    )


@dataclass(frozen=True)
class SamSection:
    """``sam``: where `spt backbones` and the commands look for official checkpoints."""

    checkpoint_dir: str | None = setting(
        None,
        "folder of the published checkpoint files (null: $SPT_SAM_CHECKPOINT_DIR, else checkpoints)",
    )
    checkpoints: dict[str, str | None] = setting({}, "explicit checkpoint path per backbone")


@dataclass(frozen=True)
class PretrainSection:
    """``pretrain``: the embedded default's tiny SAM on synthetic natural scenes."""

    scenes: int = setting(2000, "natural scenes drawn for training", minimum=1)
    epochs: int = setting(16, "epochs", minimum=1)
    batch_size: int = setting(16, "batch size", minimum=1)
    lr: float = setting(2e-3, "Adam learning rate", minimum=0, maximum=10, min_open=True)
    weight_decay: float = setting(0.0, "weight decay", minimum=0)
    warmup_steps: int = setting(50, "linear warm-up steps", minimum=0)
    lr_step_epochs: int = setting(12, "epochs per StepLR step", minimum=1)
    lr_gamma: float = setting(0.1, "StepLR factor", minimum=0, min_open=True)
    grad_clip: float | None = setting(1.0, "gradient-norm clip; 0 or null: off", minimum=0)
    seed: int = setting(0, "scene and sample seed", minimum=0, maximum=MAX_SEED)
    init_seed: int = setting(0, "SAM's random initialisation", minimum=0, maximum=MAX_SEED)
    prompt_modes: tuple[str, ...] = setting(
        ("box", "points-1", "points-3", "points-5", "points-pn", "coarse"),
        "prompt modes drawn for training", nonempty=True,
    )  # fmt: skip
    loss_points: int = setting(1024, "point-sampled loss points per mask", minimum=1)
    iou_loss_weight: float = setting(1.0, "weight of the IoU-head loss", minimum=0)
    heldout_scenes: int = setting(100, "unseen natural scenes of the quality check", minimum=0)
    industrial_probe_images: int = setting(
        100, "industrial-style probe images; 0: skip the probe", minimum=0
    )
    probe_modes: tuple[str, ...] = setting(("box", "points-1"), "prompt modes of the probes")

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from mode_problems("prompt_modes", self.prompt_modes)
        yield from mode_problems("probe_modes", self.probe_modes)


@dataclass(frozen=True)
class AugmentSection:
    """``train.augment``: the training augmentations."""

    hflip: float = setting(0.5, "horizontal-flip probability", minimum=0, maximum=1)
    lsj_prob: float = setting(1.0, "large-scale-jitter probability", minimum=0, maximum=1)
    lsj_scale: tuple[float, float] = setting(
        (0.1, 2.0), "[low, high] jitter scale range", minimum=0, maximum=10, min_open=True
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.lsj_scale[0] > self.lsj_scale[1]:
            yield "lsj_scale", f"must be [low, high] with low <= high, got {list(self.lsj_scale)}"


@dataclass(frozen=True)
class TrainSection:
    """``train``: shared by every trainable method; ``methods.<name>.train`` overrides it."""

    epochs: int = setting(16, "epochs", minimum=1)
    batch_size: int = setting(1, "global batch (split over torchrun processes)", minimum=1)
    lr: float = setting(1e-3, "Adam learning rate", minimum=0, maximum=10, min_open=True)
    weight_decay: float = setting(0.0, "weight decay", minimum=0)
    lr_step_epochs: int = setting(10, "epochs per StepLR step", minimum=1)
    lr_gamma: float = setting(0.1, "StepLR factor", minimum=0, min_open=True)
    warmup_steps: int = setting(0, "linear warm-up steps", minimum=0)
    grad_clip: float | None = setting(0.0, "gradient-norm clip; 0 or null: off", minimum=0)
    seed: int = setting(
        0, "training seed (order, augmentation, prompts)", minimum=0, maximum=MAX_SEED
    )
    prompt_modes: tuple[str, ...] = setting(
        TRAIN_PROMPT_MODES, "prompt modes drawn for training samples", nonempty=True
    )
    augment: AugmentSection = setting(AugmentSection, "augmentations")
    datasets: tuple[str, ...] | None = setting(
        None, "datasets to train on; null: pipeline.datasets", nonempty=True
    )
    precision: Literal["fp32", "bf16", "fp16"] = setting(
        "fp32", "autocast of the forward (losses stay fp32; fp16 adds a loss scaler)"
    )
    attention: Literal["sam", "sdpa"] = setting(
        "sam", "image-encoder attention: SAM's own, or torch's scaled_dot_product_attention"
    )
    checkpoint_encoder: bool = setting(
        False, "recompute the image-encoder blocks in backward (less memory, same gradients)"
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from mode_problems("prompt_modes", self.prompt_modes)


@dataclass(frozen=True)
class EvaluateSection:
    """``evaluate``: the harness (`spt evaluate`)."""

    prompt_modes: tuple[str, ...] = setting(
        EVALUATE_PROMPT_MODES, "prompt modes scored", nonempty=True
    )
    seed: int = setting(0, "prompt seed", minimum=0, maximum=MAX_SEED)
    resize: Literal["square", "longest-side"] = setting(
        "square", "input protocol: square (official) or longest-side (SAM's predictor)"
    )
    instances: bool = setting(False, "one prompt per connected component (WeSAM style)")
    mask_prompt_logit: float = setting(
        MASK_PROMPT_LOGIT,
        "logit magnitude of the coarse mask prompt",
        minimum=0,
        maximum=1000,
        min_open=True,
    )
    datasets: tuple[str, ...] | None = setting(
        None, "datasets to score; null: pipeline.datasets (+ prepared optional ones)",
        nonempty=True,
    )  # fmt: skip
    processes: int = setting(
        1,
        "processes per evaluation on this machine (torchrun --standalone underneath); the "
        "records are the same for any number",
        minimum=1,
        maximum=1024,
    )
    precision: Literal["fp32", "bf16", "fp16"] = setting(
        "fp32", "autocast of encode and decode (IoU is computed on fp32 logits)"
    )
    attention: Literal["sam", "sdpa"] = setting(
        "sam", "image-encoder attention: SAM's own, or torch's scaled_dot_product_attention"
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from mode_problems("prompt_modes", self.prompt_modes)


@dataclass(frozen=True)
class ReportSection:
    """``report``: `spt report`'s tables, tests and figures."""

    reference_method: str = setting("spt", "method compared against every other one")
    seed: int = setting(0, "bootstrap seed", minimum=0, maximum=MAX_SEED)
    n_boot: int = setting(
        10_000, "bootstrap resamples of the significance CIs", minimum=1, maximum=10**7
    )
    figure_n_boot: int = setting(
        2_000, "bootstrap resamples of the bar-chart CIs", minimum=1, maximum=10**7
    )
    examples: int = setting(3, "overlay images per dataset", minimum=0, maximum=1000)


#: spt.harness.corruptions.CORRUPTIONS (kept equal by a test: this layer may not import it).
CORRUPTION_NAMES = (
    "gaussian_noise", "defocus_blur", "motion_blur", "jpeg", "brightness", "contrast",
)  # fmt: skip


@dataclass(frozen=True)
class RobustnessSection:
    """``analyses.robustness``: prompt and image robustness curves (docs/analyses.md). Prompt
    levels are scored on clean images, corruptions with clean prompts; level 0 is the clean
    protocol."""

    box_shift: tuple[float, ...] = setting(
        (0.0, 0.1, 0.2, 0.4), "box centre shift, up to this fraction of the box side per axis",
        minimum=0, maximum=10,
    )  # fmt: skip
    box_scale: tuple[float, ...] = setting(
        (0.0, 0.1, 0.2, 0.4), "box side scaled by a factor in [1 - f, 1 + f]", minimum=0,
        maximum=1,
    )  # fmt: skip
    box_hqsam: tuple[float, ...] = setting(
        (0.0, 0.5, 1.0), "HQ-SAM's box-noise scale (HQ-SAM trains at 1.0)", minimum=0, maximum=10
    )
    point_counts: tuple[int, ...] = setting(
        (1, 2, 3, 5, 10), "positive clicks per prompt (points-K)", minimum=1, maximum=1000
    )
    click_px: tuple[float, ...] = setting(
        (0.0, 16.0, 32.0, 64.0), "click displacement, px of a 1024-px input",
        minimum=0, maximum=1024,
    )  # fmt: skip
    click_points: int = setting(1, "clicks of the displaced-click curve (points-K)", minimum=1)
    coarse_tolerance: tuple[float, ...] = setting(
        (0.05, 0.1, 0.2, 0.3), "coarse polygon tolerance x perimeter (0.05 = the protocol)",
        minimum=0, maximum=1, min_open=True,
    )  # fmt: skip
    corruptions: tuple[str, ...] = setting(
        CORRUPTION_NAMES, "image corruptions applied", nonempty=True
    )
    severities: tuple[int, ...] = setting(
        (1, 2, 3, 4, 5), "corruption severities (1 mild .. 5 strong)", minimum=1, maximum=5,
        nonempty=True,
    )  # fmt: skip
    corruption_modes: tuple[str, ...] = setting(
        ("box",), "prompt modes scored on corrupted images", nonempty=True
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from mode_problems("corruption_modes", self.corruption_modes)
        curves = ("box_shift", "box_scale", "box_hqsam", "point_counts", "click_px")
        if not any(getattr(self, name) for name in (*curves, "coarse_tolerance")):
            yield ("box_shift", "and every other prompt curve are empty; give at least one level")
        for name in self.corruptions:
            if name not in CORRUPTION_NAMES:
                yield ("corruptions", f"names {name!r}: use {', '.join(CORRUPTION_NAMES)}")
                return


@dataclass(frozen=True)
class LabelEfficiencySection:
    """``analyses.label_efficiency``: every listed method trained on k defect images per
    (dataset, category), nested subsets, scored on the unchanged test set."""

    methods: tuple[str, ...] = setting(
        ("spt", "lora", "adapter", "wesam"),
        "trainable methods trained at every k",
        nonempty=True,
    )
    k: tuple[int, ...] = setting(
        (1, 4, 16), "defect images per category; the full set is the main training run",
        minimum=1, maximum=1_000_000, nonempty=True,
    )  # fmt: skip
    prompt_modes: tuple[str, ...] = setting(("box",), "prompt modes scored", nonempty=True)

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from mode_problems("prompt_modes", self.prompt_modes)


@dataclass(frozen=True)
class TransferSection:
    """``analyses.transfer``: leave one dataset out of training, evaluate on it."""

    methods: tuple[str, ...] = setting(
        ("spt", "lora", "adapter", "wesam"),
        "trainable methods trained without each dataset",
        nonempty=True,
    )
    held_out: tuple[str, ...] = setting(
        ("mvtec", "visa", "mpdd", "btad", "ksdd2", "mtd"),
        "datasets left out of training, one run each (each must be trained on)", nonempty=True,
    )  # fmt: skip
    prompt_modes: tuple[str, ...] = setting(("box",), "prompt modes scored", nonempty=True)

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from mode_problems("prompt_modes", self.prompt_modes)


@dataclass(frozen=True)
class AnalysesSection:
    """``analyses``: the analyses beyond the anchors (`spt analysis`, docs/analyses.md)."""

    robustness: RobustnessSection = setting(RobustnessSection, "prompt and image robustness")
    label_efficiency: LabelEfficiencySection = setting(
        LabelEfficiencySection, "quality against labelled defect images"
    )
    transfer: TransferSection = setting(TransferSection, "leave-one-dataset-out transfer")


@dataclass(frozen=True)
class SuiteConfig:
    """The whole params file. ``methods`` maps a registered method's name to its own params
    (declared and checked by the method) plus an optional ``train`` mapping that overrides
    ``train`` for it (checked here, against :class:`TrainSection`)."""

    data: DataSection = setting(DataSection, "reading and preparing the datasets")
    pipeline: PipelineSection = setting(PipelineSection, "the pipeline and shared defaults")
    sam: SamSection = setting(SamSection, "official SAM checkpoints")
    pretrain: PretrainSection = setting(PretrainSection, "the tiny SAM's pretraining")
    train: TrainSection = setting(TrainSection, "training, shared by every trainable method")
    evaluate: EvaluateSection = setting(EvaluateSection, "the evaluation harness")
    report: ReportSection = setting(ReportSection, "the report")
    analyses: AnalysesSection = setting(AnalysesSection, "robustness, label efficiency, transfer")
    methods: dict[str, Any] = setting({}, "each method's own params and train overrides")
    #: The params file these came from, which messages cite (not a setting).
    source: str = field(default="params.yaml", metadata={"internal": True}, compare=False)

    def method_params(self, method: str) -> dict[str, Any]:
        """``methods.<method>`` without its ``train`` overrides: the method's own params."""
        return {k: v for k, v in self.methods.get(method, {}).items() if k != "train"}

    def train_for(self, method: str) -> TrainSection:
        """``train`` with ``methods.<method>.train`` laid over it (nested keys one by one)."""
        from spt.config.schema import overlay

        given = self.methods.get(method, {}).get("train")
        return overlay(self.train, given, self.source, f"methods.{method}.train")

    def train_key(self, method: str, name: str) -> str:
        """Which key a merged train setting came from, for messages."""
        given = self.methods.get(method, {}).get("train") or {}
        return f"methods.{method}.train.{name}" if name in given else f"train.{name}"
