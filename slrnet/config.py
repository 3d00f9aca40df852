"""Frozen configuration dataclasses for SLRNet.

`ModelConfig` fixes the architecture (and therefore the checkpoint layout); `LossWeights` the
coefficients of the training objective. Defaults follow the official SLRNet configuration for
PASCAL VOC (`experiments/slrnet_voc_wss_v100x2.yaml`: loss_coeff [1, 4, 4, 1], scale_factor 0.5,
PAMR 10 iterations with dilations 1, 2, 4, 8, 12, 24, cut-offs 0.6 / 0.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BackgroundKind = Literal["auto", "constant", "explicit"]
HeadKind = Literal["paper", "light"]

# The label value of an unknown pixel in every label map: unpainted in a mask, uncertain in a
# pseudo-label, ignored by the losses and the metrics (class indices are 0..254).
IGNORE_INDEX = 255
# The backbones slrnet.backbones registers (a test holds the two equal; this list is torch-free).
BACKBONES: tuple[str, ...] = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite2", "resnet50",
                              "resnet101", "wideresnet38", "tiny")
# Pixels whose top class probability is below this are "uncertain" (255) in every pseudo-label:
# the same in `predict` and in every benchmark.
UNCERTAIN_BELOW = 0.2
# Pixels at or above this confidence are "confident": Review's "Accept the confident pixels" keeps
# only them. The lowest cut-off whose pixels are >= 90 % right on the tune split of MSRC-21 (the
# image's tags known; benchmarks/RESULTS.md, "Confidence that means something": unseen third 92.6 %
# right, 25 % of the pixels, on a weak 2-epoch model).
CONFIDENT_FROM = 0.6
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")  # what slrnet.train.resolve_device accepts


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an SLRNet model.

    Attributes:
        num_classes: K, the number of output classes *including* background when
            `has_background` (background is then class 0).
        mode: supervision setting; it decides how the background logit is produced (see
            `background`).
        backbone: a name registered in `slrnet.backbones.BACKBONES`.
        pretrained: load ImageNet weights for the backbone. `False` never touches the file system.
        backbone_weights: path to a backbone weights file. Required for ImageNet weights of
            `wideresnet38` (`ilsvrc-cls_rna-a1_cls1000_ep-0001.pth`); for torchvision backbones it
            replaces the torchvision weights API.
        output_stride: 8 or 16, stride of the deep features fed to ASPP.
        has_background: class 0 is "background" (a stuff class that is not tagged by the user).
        background: how the background score of the main head is produced. "constant": a fixed
            logit of 1 (1-Stage / SLRNet for image tags, where nothing supervises background
            directly); "explicit": a learnt channel (SLRNet's semi-supervised variant). "auto" picks
            explicit for masks only (ssss) and constant when image tags train the classifier
            (wsss, and ssss_tags as in the official semi-supervised-with-tags setting).
        feature_channels: width of the decoder and of the low-rank module (256 in the paper).
        freeze_low: do not train the backbone up to stride 4 (`Backbone.freeze_low`; the official
            code freezes WideResNet-38's stem and b2 only). The CPU-sized model sets it.
        freeze_backbone: do not train the backbone at all (ImageNet features as they are): its
            forward then records no autograd graph, so a step skips the backbone's backward, the
            largest part of a CPU step with a narrow head.
        separable_head: depthwise-separable 3x3 convs in the decoder and heads (False in the paper
            and in the CPU-sized model, `services.train_plan.CPU_MODEL`: no faster on the CPUs
            measured, and less accurate).
        view_scale: scale of the second view w.r.t. the crop (0.5 in the paper's configuration).
        view_flip: randomly flip the second view horizontally (per image).
        low_rank_iters: T, iterations of the dictionary update (1 in the paper).
        low_rank_temperature: temperature of the code softmax (1.0 in the paper).
        gate_rate: stochastic-gate rate (0.3, as in 1-Stage).
        pamr_iters, pamr_dilations: PAMR refinement of pseudo-labels.
        head: "paper" (`slrnet.model.SLRNet`: backbone + ASPP decoder + GCI head, trained on
            images) or "light" (`slrnet.light_head.LightSLRNet`: the frozen backbone's stored
            multi-level features + 1x1 projections, trained on `slrnet.feature_data` batches;
            `backbone` must have levels, `output_stride` and the freeze flags are moot).
        feature_image_size, feature_views: the `slrnet.features.FeatureSpec` a light head trains
            on (longer side of view "s1" in px; the views stored per image).
        head_dropout: dropout before the light head's classifiers.
    """

    num_classes: int
    mode: str = "wsss"  # one of MODES
    backbone: str = "mobilenet_v2"  # one of BACKBONES
    pretrained: bool = True
    backbone_weights: str | None = None
    output_stride: int = 16
    has_background: bool = True
    background: BackgroundKind = "auto"
    feature_channels: int = 256
    separable_head: bool = False
    freeze_low: bool = False
    freeze_backbone: bool = False
    view_scale: float = 0.5
    view_flip: bool = False
    low_rank_iters: int = 1
    low_rank_temperature: float = 1.0
    gate_rate: float = 0.3
    pamr_iters: int = 10
    pamr_dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)
    head: HeadKind = "paper"
    feature_image_size: int = 320
    feature_views: tuple[str, ...] = ("s1", "s1f", "s0.5", "s0.5f")
    head_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.head not in ("paper", "light"):
            raise ValueError(f"head must be paper or light, got {self.head!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {self.output_stride}")
        min_classes = 2 if self.has_background else 1
        if self.num_classes < min_classes:
            raise ValueError(f"num_classes must be >= {min_classes}, got {self.num_classes}")
        if self.background not in ("auto", "constant", "explicit"):
            raise ValueError(f"background must be auto, constant or explicit, got {self.background!r}")
        if not 0.0 < self.view_scale <= 1.0:
            raise ValueError(f"view_scale must be in (0, 1], got {self.view_scale}")
        if self.low_rank_iters < 1:
            raise ValueError("low_rank_iters must be >= 1")
        if not 0.0 <= self.gate_rate < 1.0:
            raise ValueError("gate_rate must be in [0, 1)")

    @property
    def constant_background(self) -> bool:
        """True when the main head's class-0 logit is the constant 1 instead of a learnt channel."""
        if not self.has_background:
            return False
        if self.background == "auto":
            return MODE_FACTS[self.mode].uses_tags
        return self.background == "constant"


@dataclass(frozen=True)
class LossWeights:
    """Coefficients of the loss terms (official `loss_coeff` = [cls, mask reg, code reg, seg]).

    Attributes:
        cls: multilabel soft-margin classification loss (per view; see `aux`).
        mask_consistency: L1 between the two views' class masks (4 in the paper).
        code_consistency: L1 between the two views' low-rank codes (4 in the paper).
        pseudo: class-balanced CE on PAMR-refined pseudo-labels (after warm-up).
        mask_ce: CE on pixels the user painted, a mean over the masked images. 2: the official
            semi-supervised objective counts the labelled images' loss twice (once in the seg
            term, once in place of their cls term), each a mean over the batch.
        aux: relative weight of the auxiliary head inside the cls / pseudo / mask CE terms (0.4).
    """

    cls: float = 1.0
    mask_consistency: float = 4.0
    code_consistency: float = 4.0
    pseudo: float = 1.0
    mask_ce: float = 2.0
    aux: float = 0.4


@dataclass(frozen=True)
class ModeFacts:
    """What one supervision mode is: the labels it trains on, its background, its loss weights,
    how its masks are oversampled and its pseudo-label constants (``slrnet.pseudo_labels``).

    Attributes:
        uses_tags: image tags train the classifier (and, in predict, tags are predicted); with
            ``ModelConfig.background="auto"`` the background logit is then the constant 1, else a
            learnt channel.
        uses_masks: painted pixels train a CE term; without it the mode trains on the tagged
            images only, masks unused.
        loss_weights: the official ``loss_coeff`` per setting: VOC tags [1, 4, 4, 1];
            semi-supervised with image tags [0.5, 2, 2, 0.5] (cls, mask reg, code reg, seg).
        mask_share: share of an epoch's views that are masked images (:func:`default_mask_repeat`
            oversamples them to it). The official VOC semi configs oversample the 1464 masks 7x
            without tags (~53 % of the views) and 3x with them (~33 %). Measured without tags
            (CamVid@20, the 4-minute CPU budget): half beats a third by 3.3 mIoU points
            (RESULTS.md); with tags not measured.
        cutoff_top, cutoff_low, background_factor: the pseudo-label cut-offs (official values:
            tags (0.6, 0.2, 0.7), masks only (0.8, 0.6, 0.9)); background_power: the training
            pseudo-labels' background sharpening.
        cpu_frozen_backbone: the CPU default keeps the ImageNet backbone frozen: with tags only, 6
            epochs of a frozen backbone beat 4 fine-tuned ones in the same 4 minutes by 2-8 mIoU
            points on MSRC-21; with masks (CamVid@20) it did not help (RESULTS.md).
        cpu_stored_features: the CPU default trains the light head on stored features
            (``ModelConfig.head="light"``) instead of the paper head: with tags only, MSRC-21
            pseudo-labels 0.76 mIoU against 0.50 (RESULTS.md, "Features once"); with masks
            (CamVid@20, ssss, seeds 0-2, same masked images) val mIoU 0.474 / 0.363 / 0.401 (mean
            0.413) against the paper head's 0.316 / 0.290 / 0.303 (0.303): +11 points on average,
            +7 to +16 on every seed, for ~280 CPU-s of one core (features 72 + training 207) against
            the paper head's 4 minutes on 2 threads; pole stays 0 for both (RESULTS.md, "CamVid with
            few masks on stored features"). Neither head beats supervised-only on its own network
            there (light 0.439, -2.6 points; paper -1.8), so that target does not pick between
            them. ssss_tags follows ssss (CamVid has no tags: not measured on its own).
    """

    uses_tags: bool
    uses_masks: bool
    loss_weights: LossWeights
    mask_share: float | None
    cutoff_top: float
    cutoff_low: float
    background_factor: float
    background_power: float
    cpu_frozen_backbone: bool
    cpu_stored_features: bool = False


MODE_FACTS: dict[str, ModeFacts] = {
    "wsss": ModeFacts(uses_tags=True, uses_masks=False, loss_weights=LossWeights(), mask_share=None,
                      cutoff_top=0.6, cutoff_low=0.2, background_factor=0.7, background_power=1.0,
                      cpu_frozen_backbone=True, cpu_stored_features=True),
    "ssss": ModeFacts(uses_tags=False, uses_masks=True, loss_weights=LossWeights(), mask_share=1 / 2,
                      cutoff_top=0.8, cutoff_low=0.6, background_factor=0.9, background_power=3.0,
                      cpu_frozen_backbone=False, cpu_stored_features=True),
    "ssss_tags": ModeFacts(uses_tags=True, uses_masks=True,
                           loss_weights=LossWeights(cls=0.5, mask_consistency=2.0, code_consistency=2.0,
                                                    pseudo=0.5),
                           mask_share=1 / 3, cutoff_top=0.6, cutoff_low=0.2, background_factor=0.7,
                           background_power=1.0, cpu_frozen_backbone=False, cpu_stored_features=True),
}
MODES: tuple[str, ...] = tuple(MODE_FACTS)
MAX_MASK_REPEAT = 32


def predict_size(model_config: ModelConfig, train_image_size: int) -> int:
    """The longer image side a trained model predicts at by default: the training crop, or for a
    light head the size its stored features were computed at."""
    if model_config.head == "light":
        return model_config.feature_image_size
    return int(train_image_size)


def default_mask_repeat(masked: int, others: int, mode: str = "ssss") -> int:
    """Repeats per epoch of each masked image so masks make up about the mode's ``mask_share`` of
    what is seen (1..MAX_MASK_REPEAT; 1 in wsss, which has no masks to oversample)."""
    share = MODE_FACTS[mode].mask_share
    if masked == 0 or share is None:
        return 1
    return max(1, min(MAX_MASK_REPEAT, round(share / (1 - share) * others / masked)))


@dataclass(frozen=True)
class TrainConfig:
    """How to train (not what): optimiser, schedule, augmentation, budget.

    Attributes:
        epochs: passes over the training set; `warmup_epochs` of them (counted from the first)
            train without the pseudo-label loss.
        batch_size, image_size: square crops of `image_size` px per image.
        crop_scale: area range of the random resized crop; color_jitter: brightness, contrast and
            saturation strength (hue a third of it).
        mask_repeat: how often each masked image appears per epoch (oversampling the few labelled
            images among many unlabelled ones).
        lr, momentum, weight_decay: SGD; each parameter group scales `lr` by its `lr_mult`
            (new layers ×10).
        poly_power, min_lr_ratio: lr × (floor + (1 - floor)(1 - t/T)^power), T = all steps.
        feature_resolution_losses: pixel losses on the stride-4 logit grid instead of the crop
            (`slrnet.modes.compute_losses`); the CPU default.
        amp: mixed precision on CUDA (ignored on CPU).
        num_workers: data-loading processes per rank.
        seed: runs with equal configs and seeds give equal weights (on CPU).
        loss_weights: coefficients of the loss terms.
    """

    epochs: int = 10
    warmup_epochs: int = 2
    batch_size: int = 8
    image_size: int = 256
    crop_scale: tuple[float, float] = (0.5, 1.0)
    color_jitter: float = 0.3
    mask_repeat: int = 1
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    min_lr_ratio: float = 0.01
    feature_resolution_losses: bool = False
    amp: bool = True
    num_workers: int = 0
    seed: int = 0
    loss_weights: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in 0..{self.epochs}, got {self.warmup_epochs}")
        if self.batch_size < 1 or self.image_size < 32 or self.mask_repeat < 1:
            raise ValueError("batch_size and mask_repeat must be >= 1, image_size >= 32")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass(frozen=True)
class InferenceConfig:
    """How `slrnet.inference.Predictor` turns an image into class probabilities.

    Attributes:
        size: the image's longer side is resized to this before the scales apply (None: keep the
            original resolution; the predictor defaults to the training crop size).
        scales, flip: test-time averaging over rescaled and mirrored copies.
        class_filter: "auto" (known tags when the image has them, else the predicted tags when the
            model was trained with tags), "known", "predicted" or "none".
        tag_threshold: sigmoid score above which a class counts as predicted present when the
            checkpoint has no calibrated presence rule (or ``calibrated_presence`` is off).
        calibrated_presence: judge presence by the checkpoint's `slrnet.presence.PresenceRule`
            (learnt on the run's tagged images) when it has one.
        pamr: refine the probabilities with PAMR (the paper's pseudo-label refinement).
        pamr_scale: PAMR runs on the resized image scaled by this (1: at the predicted size; the
            CPU default refines at half size, then upsamples: 4x fewer pixels to propagate).
        uncertain_below: label pixels whose top probability is below this as 255 (uncertain).
            One value for `predict` and every benchmark (UNCERTAIN_BELOW).
        background_power: after renormalising over the kept classes, the background probability
            is raised to this power and renormalised again (official SLRNet `bg_pow`: 3 for VOC
            tags, 1 for COCO). 1 unless a benchmark on held-out data says otherwise
            (benchmarks/RESULTS.md).
        class_max_norm: after PAMR, divide each kept class's map by its maximum over the image
            and renormalise (the official COCO pseudo-label rule, and how the training
            pseudo-labels read their maps): a class that never wins a pixel outright, such as an
            object always seen on a stuff class, still takes the pixels where it is strongest.
            Only when the class filter kept a subset (known or predicted tags). On by default:
            +4 to +22 mIoU points on MSRC-21 for every head measured (benchmarks/RESULTS.md).
    """

    size: int | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = True
    class_filter: Literal["auto", "known", "predicted", "none"] = "auto"
    tag_threshold: float = 0.5
    calibrated_presence: bool = True
    pamr: bool = True
    pamr_scale: float = 1.0
    uncertain_below: float = UNCERTAIN_BELOW
    background_power: float = 1.0
    class_max_norm: bool = True

    def __post_init__(self) -> None:
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive, got {self.scales}")
        if self.class_filter not in ("auto", "known", "predicted", "none"):
            raise ValueError(f"unknown class_filter {self.class_filter!r}")
        if not 0.0 < self.pamr_scale <= 1.0:
            raise ValueError(f"pamr_scale must be in (0, 1], got {self.pamr_scale}")
        if self.background_power <= 0:
            raise ValueError(f"background_power must be positive, got {self.background_power}")
