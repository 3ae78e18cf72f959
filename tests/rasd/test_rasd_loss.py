"""Prototype-disentangling loss: against a loop-by-loop reference, hand-computed cases and absent labels."""

import math

import pytest
import torch

from synthvlp.rasd.config import LossConfig
from synthvlp.rasd.loss import PrototypeDisentangleLoss


def slow_reference(features: torch.Tensor, labels: torch.Tensor, num_labels: int, tau: float) -> tuple[float, float]:
    """The loss written out voxel by voxel and label by label, in float64, skipping absent labels."""
    pull_terms, push_terms = [], []
    for b in range(features.shape[0]):
        feats = features[b].reshape(features.shape[1], -1).double()
        labs = labels[b].reshape(-1)
        present = [k for k in range(num_labels) if bool((labs == k).any())]
        protos = {k: feats[:, labs == k].mean(1) for k in present}
        for x in range(feats.shape[1]):
            logits = {k: float(protos[k] @ feats[:, x]) / tau for k in present}
            lse = math.log(sum(math.exp(v) for v in logits.values()))
            pull_terms.append(lse - logits[int(labs[x])])
        for k in present:
            logits = {j: float(protos[k] @ protos[j]) / tau for j in present}
            lse = math.log(sum(math.exp(v) for v in logits.values()))
            push_terms.append(lse - logits[k])
    return sum(pull_terms) / len(pull_terms), sum(push_terms) / len(push_terms)


@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
@pytest.mark.parametrize("num_labels", [3, 6])
def test_matches_slow_reference(spatial, num_labels):
    gen = torch.Generator().manual_seed(7)
    features = torch.randn(3, 4, *spatial, generator=gen) * 0.2
    labels = torch.randint(0, num_labels, (3, 1, *spatial), generator=gen)
    labels[1][labels[1] == 1] = 0  # label 1 absent from image 1
    tau = 0.5
    out = PrototypeDisentangleLoss(LossConfig(tau=tau, pull_weight=2.0, push_weight=0.5), num_labels)(features, labels)
    pull, push = slow_reference(features, labels, num_labels, tau)
    assert out.pull.item() == pytest.approx(pull, rel=1e-4)
    assert out.push.item() == pytest.approx(push, rel=1e-4)
    assert out.total.item() == pytest.approx(2.0 * pull + 0.5 * push, rel=1e-4)


def test_hand_computed_orthogonal_prototypes():
    # two pixels, one-hot features: prototypes e0 and e1; every softmax is [1/tau, 0] against its target
    features = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (B=1, C=2, H=1, W=2)
    labels = torch.tensor([[[[0, 1]]]])
    out = PrototypeDisentangleLoss(LossConfig(tau=1.0))(features, labels)
    expected = math.log(1 + math.exp(-1))
    assert out.pull.item() == pytest.approx(expected, rel=1e-6)
    assert out.push.item() == pytest.approx(expected, rel=1e-6)
    assert out.total.item() == pytest.approx(2 * expected, rel=1e-6)


def test_hand_computed_default_tau():
    # same prototypes; one extra pixel (0.5, 0.5) of label 0 moves p0 to (0.75, 0.25)
    features = torch.tensor([[[[1.0, 0.0, 0.5]], [[0.0, 1.0, 0.5]]]])
    labels = torch.tensor([[[0, 1, 0]]])
    out = PrototypeDisentangleLoss(num_labels=2)(features, labels)
    tau = 0.07
    p0, p1 = torch.tensor([0.75, 0.25]), torch.tensor([0.0, 1.0])
    pixels, targets = features[0, :, 0].T, [0, 1, 0]

    def ce(logits, target):
        return torch.logsumexp(logits, 0) - logits[target]

    pull = sum(ce(torch.stack([p0 @ x, p1 @ x]) / tau, t) for x, t in zip(pixels, targets)) / 3
    push = (ce(torch.stack([p0 @ p0, p0 @ p1]) / tau, 0) + ce(torch.stack([p1 @ p0, p1 @ p1]) / tau, 1)) / 2
    assert out.pull.item() == pytest.approx(pull.item(), rel=1e-5)
    assert out.push.item() == pytest.approx(push.item(), rel=1e-5)


def test_single_label_image_costs_nothing():
    features = torch.randn(2, 3, 4, 4)
    labels = torch.full((2, 1, 4, 4), 2)
    out = PrototypeDisentangleLoss(num_labels=5)(features, labels)
    assert out.pull.item() == pytest.approx(0.0, abs=1e-6)
    assert out.push.item() == pytest.approx(0.0, abs=1e-6)


def test_absent_labels_are_ignored_not_nan():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2, 8, 6, 6, generator=gen, requires_grad=True)
    labels = torch.randint(0, 2, (2, 6, 6), generator=gen) * 3  # only labels 0 and 3 of 6 occur
    out = PrototypeDisentangleLoss(num_labels=6)(features, labels)
    out.total.backward()
    assert torch.isfinite(out.total) and torch.isfinite(features.grad).all()
    compact = PrototypeDisentangleLoss(num_labels=2)(features.detach(), labels // 3)
    assert out.total.item() == pytest.approx(compact.total.item(), rel=1e-5)


def test_separated_features_score_lower_than_random():
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (2, 8, 8), generator=gen)
    separated = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    loss = PrototypeDisentangleLoss(num_labels=4)
    assert loss(separated, labels).total < loss(torch.rand(2, 4, 8, 8, generator=gen), labels).total


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="do not match"):
        PrototypeDisentangleLoss()(torch.randn(1, 2, 4, 4), torch.zeros(1, 1, 4, 5, dtype=torch.long))
