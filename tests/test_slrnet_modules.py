"""Building blocks: low-rank module, PAMR, pseudo-labels, losses, heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slrnet.config import IGNORE_INDEX
from slrnet.heads import StochasticGate, class_scores
from slrnet.losses import balanced_ce, code_consistency, keep_max, masked_ce
from slrnet.low_rank import LowRankReconstruction, init_dictionary
from slrnet.pamr import PAMR
from slrnet.pseudo_labels import make_pseudo_labels

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_low_rank_reconstruction_has_rank_at_most_k() -> None:
    torch.manual_seed(0)
    k, c, n = 3, 32, 100
    module = LowRankReconstruction(c, num_iters=2)
    codes, dictionary = module.factorize(torch.randn(2, n, c), torch.randn(2, k, c))
    assert codes.shape == (2, k, n) and dictionary.shape == (2, k, c)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(2, n))
    torch.testing.assert_close(dictionary.norm(dim=-1), torch.ones(2, k))
    recon = torch.einsum("bkn,bkc->bnc", codes, dictionary)
    assert (torch.linalg.matrix_rank(recon) <= k).all()
    # the tokens themselves are full rank: the bound comes from the factorisation
    assert (torch.linalg.matrix_rank(module.embed(torch.randn(2, n, c))) > k).all()


def test_low_rank_module_is_equivariant_to_token_permutation() -> None:
    torch.manual_seed(0)
    module = LowRankReconstruction(16, num_iters=3)
    tokens, init = torch.randn(2, 50, 16), torch.randn(2, 4, 16)
    perm = torch.randperm(50)
    a = module(tokens, init)
    b = module(tokens[:, perm], init)
    torch.testing.assert_close(b.features, a.features[:, perm])
    torch.testing.assert_close(b.codes, a.codes[:, :, perm])
    torch.testing.assert_close(b.dictionary, a.dictionary)


def test_init_dictionary_is_class_weighted_mean() -> None:
    feats = torch.zeros(1, 2, 2, 2)
    feats[0, :, 0, 0] = torch.tensor([4.0, 0.0])
    feats[0, :, 1, 1] = torch.tensor([0.0, 6.0])
    logits = torch.full((1, 2, 2, 2), -50.0)
    logits[0, 0, 0, 0] = 50.0    # class 0 owns pixel (0, 0)
    logits[0, 1, 0, 1] = 50.0
    logits[0, 1, 1, 0] = 50.0
    logits[0, 1, 1, 1] = 50.0    # class 1 owns the rest
    d = init_dictionary(feats, logits)
    torch.testing.assert_close(d[0, 0], torch.tensor([4.0, 0.0]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(d[0, 1], torch.tensor([0.0, 2.0]), atol=1e-4, rtol=1e-4)


def _two_region_image() -> tuple[torch.Tensor, torch.Tensor]:
    """A 32x32 image: left half red, right half blue; and the matching one-hot mask."""
    image = torch.zeros(1, 3, 32, 32)
    image[0, 0, :, :16] = 1.0
    image[0, 2, :, 16:] = 1.0
    mask = torch.zeros(1, 2, 32, 32)
    mask[0, 0, :, :16] = 1.0
    mask[0, 1, :, 16:] = 1.0
    return image, mask


def test_pamr_preserves_constant_colour_regions() -> None:
    image, mask = _two_region_image()
    refined = PAMR()(image, mask)
    assert refined.shape == mask.shape
    torch.testing.assert_close(refined, mask, atol=1e-3, rtol=0)


def test_pamr_snaps_a_blurred_mask_to_the_colour_edge() -> None:
    image, mask = _two_region_image()
    blurred = F.interpolate(F.avg_pool2d(mask, 8), size=(32, 32), mode="bilinear", align_corners=False)
    wrong_before = (blurred.argmax(1) != mask.argmax(1)).sum()
    refined = PAMR()(image, blurred + 0.1 * torch.rand_like(blurred))
    assert (refined.argmax(1) != mask.argmax(1)).sum() <= wrong_before
    # inside each region the refinement is sharper than the blurred input
    assert (refined[0, 0, :, 12:16] > blurred[0, 0, :, 12:16]).float().mean() > 0.9
    torch.testing.assert_close(refined.sum(1), (blurred + 0.0).sum(1), atol=0.3, rtol=0)


def test_pamr_takes_masks_at_a_lower_resolution() -> None:
    image, mask = _two_region_image()
    out = PAMR(num_iter=2, dilations=(1, 2))(image, F.avg_pool2d(mask, 4))
    assert out.shape == (1, 2, 32, 32)


def test_pseudo_labels_never_contain_absent_classes() -> None:
    torch.manual_seed(0)
    probs = torch.rand(4, 5, 16, 16).softmax(dim=1)
    present = torch.rand(4, 5) > 0.5
    present[:, 0] = True
    labels = make_pseudo_labels(probs, present, cutoff_low=0.0)
    assert labels.dtype == torch.int64 and labels.shape == (4, 16, 16)
    for i in range(4):
        found = set(labels[i].unique().tolist()) - {IGNORE_INDEX}
        assert found <= set(torch.nonzero(present[i]).flatten().tolist())
    assert (labels != IGNORE_INDEX).any()


def test_pseudo_labels_cutoffs_and_ambiguity() -> None:
    probs = torch.zeros(1, 3, 1, 4)
    probs[0, :, 0, 0] = torch.tensor([0.9, 0.1, 0.0])    # background (0.9 > 0.7 * 0.9)
    probs[0, :, 0, 1] = torch.tensor([0.1, 0.8, 0.1])    # class 1 at its maximum
    probs[0, :, 0, 2] = torch.tensor([0.0, 0.4, 0.6])    # class 1 below 0.6 * 0.8; class 2 at max
    probs[0, :, 0, 3] = torch.tensor([0.7, 0.0, 0.3])    # bg 0.7 > 0.63 and class 2 0.3 < 0.36
    labels = make_pseudo_labels(probs, torch.ones(1, 3, dtype=torch.bool))
    assert labels.tolist() == [[[0, 1, 2, 0]]]
    probs[0, :, 0, 3] = torch.tensor([0.7, 0.0, 0.5])    # both above their cut-offs -> ignored
    labels = make_pseudo_labels(probs, torch.ones(1, 3, dtype=torch.bool))
    assert labels[0, 0, 3] == IGNORE_INDEX
    # a class whose maximum is under cutoff_low never appears
    weak = torch.full((1, 2, 2, 2), 0.15)
    assert (make_pseudo_labels(weak, torch.ones(1, 2, dtype=torch.bool)) == IGNORE_INDEX).all()


def test_balanced_ce_weights_classes_and_ignores_pixels() -> None:
    target = torch.full((1, 4, 4), IGNORE_INDEX)
    target[0, 0, :] = 1
    target[0, 1:, :] = 0
    logits = torch.zeros(1, 3, 4, 4, requires_grad=True)
    loss = balanced_ce(logits, target)
    # 12 pixels of class 0 weighted 4/17, 4 of class 1 weighted 12/17, uniform CE = log 3
    expected = (12 * 4 / 17 + 4 * 12 / 17) * torch.log(torch.tensor(3.0)) / 16
    torch.testing.assert_close(loss, expected.reshape(1))
    # one class only -> no loss (1-Stage)
    assert balanced_ce(logits, torch.zeros(1, 4, 4, dtype=torch.int64)).item() == 0.0


def test_masked_ce_uses_only_painted_pixels() -> None:
    target = torch.full((2, 4, 4), IGNORE_INDEX)
    target[0, 0, 0] = 2
    logits = torch.zeros(2, 3, 4, 4)
    logits[0, 2, 0, 0] = 10.0
    logits[0, 0, 1:, :] = 10.0     # wrong on unknown pixels: must not matter
    loss = masked_ce(logits, target)
    assert loss[0] < 1e-3 and loss[1] == 0.0


def test_keep_max_keeps_the_value_not_one() -> None:
    codes = torch.tensor([0.2, 0.5, 0.3]).reshape(1, 3, 1, 1)
    assert keep_max(codes).flatten().tolist() == [0.0, 0.5, 0.0]
    same = code_consistency(codes, codes)
    assert same.item() == 0.0
    other = torch.tensor([0.6, 0.2, 0.2]).reshape(1, 3, 1, 1)
    assert code_consistency(codes, other).item() > 0.0


def test_stochastic_gate_expectation_and_inference() -> None:
    torch.manual_seed(0)
    gate = StochasticGate(0.3)
    deep, shallow = torch.full((1, 1, 200, 200), 2.0), torch.full((1, 1, 200, 200), -1.0)
    gate.train()
    assert abs(gate(deep, shallow).mean().item() - 2.0) < 0.05
    gate.eval()
    torch.testing.assert_close(gate(deep, shallow), 0.7 * deep + 0.3 * shallow)


def test_class_scores_rank_the_dominant_class_first() -> None:
    logits = torch.zeros(1, 3, 8, 8)
    logits[0, 1, :4] = 5.0          # class 1 on half the image
    scores = class_scores(logits)
    assert scores.shape == (1, 3)
    assert scores[0, 1] > scores[0, 2]


def test_training_pseudo_labels_refine_only_present_classes_with_the_same_result() -> None:
    from slrnet.config import MODE_FACTS, ModelConfig
    from slrnet.modes import pseudo_label_targets

    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=12, mode="wsss", backbone="tiny", pretrained=False)
    probs = (4 * torch.randn(2, 12, 8, 8)).softmax(1)
    outs = {"probs": probs, "probs_view2": probs.flip(-1)}
    image = torch.randn(2, 3, 32, 32)
    present = torch.zeros(2, 12, dtype=torch.bool)
    present[:, 0] = True
    present[0, [3, 7]] = True
    present[1, 5] = True
    got = pseudo_label_targets(cfg, outs, image, present)

    # Reference: PAMR over all K channels, as the 1-Stage recipe writes it, of the probabilities
    # renormalised over each image's allowed classes.
    spec = MODE_FACTS[cfg.mode]
    mean = (outs["probs"] + outs["probs_view2"]) / 2
    mean = torch.cat([mean[:, :1].pow(spec.background_power), mean[:, 1:]], dim=1)
    mean = mean * present[:, :, None, None]
    mean = mean / mean.sum(1, keepdim=True)
    small = F.interpolate(image, size=(8, 8), mode="bilinear", align_corners=True)
    refined = F.interpolate(PAMR(cfg.pamr_iters, cfg.pamr_dilations)(small, mean), size=(32, 32),
                            mode="bilinear", align_corners=True)
    want = make_pseudo_labels(refined, present, spec.cutoff_top, spec.cutoff_low, spec.background_factor)
    assert (got == want).float().mean() > 0.999  # equal up to float rounding at the cut-offs
    assert set(got[1].unique().tolist()) <= {0, 5, IGNORE_INDEX}
    assert (got != IGNORE_INDEX).any()


def test_training_pseudo_labels_with_many_classes_label_pixels() -> None:
    """K = 81 (COCO): the few allowed classes hold a small share of the softmax mass; without
    renormalising over them no pixel reaches the 0.2 floor and the pseudo-label loss is 0."""
    from slrnet.config import ModelConfig
    from slrnet.modes import pseudo_label_targets

    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=81, mode="wsss", backbone="tiny", pretrained=False)
    logits = 0.3 * torch.randn(2, 81, 16, 16)
    logits[:, 3, :, :8] += 1.0   # class 3 on the left half, background elsewhere
    logits[:, 0, :, 8:] += 1.0
    probs = logits.softmax(1)
    assert probs[:, [0, 3]].amax(1).max() < 0.2  # below the floor before renormalising
    present = torch.zeros(2, 81, dtype=torch.bool)
    present[:, [0, 3]] = True
    labels = pseudo_label_targets(cfg, {"probs": probs, "probs_view2": probs}, torch.randn(2, 3, 64, 64),
                                  present)
    labelled = labels != IGNORE_INDEX
    assert labelled.float().mean() > 0.3
    assert (labels[:, :, :24][labelled[:, :, :24]] == 3).float().mean() > 0.8
    assert (labels[:, :, 40:][labelled[:, :, 40:]] == 0).float().mean() > 0.8


def test_mask_ce_is_a_mean_over_the_masked_images_only() -> None:
    """Half the batch unlabelled must not halve the weight of the painted pixels (official: the
    labelled loss is a mean over labelled images)."""
    from slrnet.config import ModelConfig
    from slrnet.model import build_model
    from slrnet.modes import compute_losses

    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=4, mode="ssss", backbone="tiny", pretrained=False, feature_channels=16)
    model = build_model(cfg).eval()
    images = torch.randn(2, 3, 32, 32)
    mask = torch.full((2, 32, 32), IGNORE_INDEX, dtype=torch.int64)
    mask[0, :16] = 1
    mask[0, 16:] = 2

    def batch(n: int) -> dict[str, torch.Tensor]:
        return {"image": images[:n], "tags": torch.zeros(n, 4), "has_tags": torch.zeros(n, dtype=torch.bool),
                "mask": mask[:n], "has_mask": torch.tensor([True, False][:n])}

    with torch.no_grad():
        both = compute_losses(cfg, model.forward_train(images), batch(2), False)
        alone = compute_losses(cfg, model.forward_train(images[:1]), batch(1), False)
    assert both["mask_ce"] > 0
    assert torch.allclose(both["mask_ce"], alone["mask_ce"], rtol=1e-4)
