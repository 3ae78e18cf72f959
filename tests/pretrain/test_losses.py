"""The contrastive losses against slow per-pair references written here, and on cases computable by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from synthvlp.pretrain.losses import clip_loss, gloria_local_loss, gloria_similarity


def reference_clip(image, text, scale) -> torch.Tensor:
    """InfoNCE one sample at a time: -log p(text i | image i) and -log p(image i | text i), averaged."""
    n = image.shape[0]
    total = 0.0
    for i in range(n):
        sims_i2t = [scale * F.cosine_similarity(image[i], text[j], dim=0) for j in range(n)]
        sims_t2i = [scale * F.cosine_similarity(text[i], image[j], dim=0) for j in range(n)]
        total = total - torch.log(torch.exp(sims_i2t[i]) / sum(torch.exp(s) for s in sims_i2t))
        total = total - torch.log(torch.exp(sims_t2i[i]) / sum(torch.exp(s) for s in sims_t2i))
    return total / (2 * n)


def reference_gloria(regions, words, mask, t1, t2) -> torch.Tensor:
    """GLoRIA's local image-report score, one image, one report and one word at a time."""
    n, m = regions.shape[0], words.shape[0]
    out = torch.zeros(n, m, dtype=regions.dtype)
    for a in range(n):
        for b in range(m):
            exps = []
            for t in range(words.shape[1]):
                if not mask[b, t]:
                    continue
                w = words[b, t]
                cos = torch.stack([F.cosine_similarity(w, r, dim=0) for r in regions[a]])
                weights = torch.exp(t1 * cos) / torch.exp(t1 * cos).sum()
                context = (weights[:, None] * F.normalize(regions[a], dim=-1)).sum(0)
                exps.append(torch.exp(t2 * F.cosine_similarity(context, w, dim=0)))
            out[a, b] = torch.log(torch.stack(exps).sum()) / t2
    return out


def test_clip_matches_reference():
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(6, 8, generator=g, dtype=torch.float64), torch.randn(6, 8, generator=g, dtype=torch.float64)
    scale = torch.tensor(7.0, dtype=torch.float64)
    assert torch.allclose(clip_loss(image, text, scale), reference_clip(image, text, scale), atol=1e-10)


def test_clip_by_hand():
    """Two orthogonal matched pairs: logits [[s, 0], [0, s]], so each term is log(1 + e^-s)."""
    eye = torch.eye(2)
    assert clip_loss(eye, 3 * eye, torch.tensor(2.0)).item() == pytest.approx(math.log(1 + math.exp(-2)))


def test_clip_gradient_reaches_temperature():
    log_scale = torch.tensor(1.0, requires_grad=True)
    clip_loss(torch.randn(4, 3), torch.randn(4, 3), log_scale.exp()).backward()
    assert log_scale.grad is not None and log_scale.grad != 0


def test_gloria_similarity_matches_reference():
    g = torch.Generator().manual_seed(1)
    regions = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    words = torch.randn(4, 6, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 6, generator=g) > 0.3
    mask[:, 0] = True
    fast = gloria_similarity(regions, words, mask, 4.0, 5.0)
    assert fast.shape == (3, 4)
    assert torch.allclose(fast, reference_gloria(regions, words, mask, 4.0, 5.0), atol=1e-10)


def test_gloria_by_hand_one_region_one_word():
    """One region: attention is 1, the context is the region, and one word's pooled score is its cosine."""
    regions = torch.tensor([[[1.0, 0.0]]])
    words = torch.tensor([[[1.0, 1.0], [5.0, -3.0]]])  # the second word is padding
    mask = torch.tensor([[True, False]])
    assert gloria_similarity(regions, words, mask, 4.0, 5.0).item() == pytest.approx(1 / math.sqrt(2))


def test_gloria_loss_matches_reference_and_is_symmetric_cross_entropy():
    g = torch.Generator().manual_seed(2)
    regions, words = torch.randn(3, 4, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, 5, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)
    logits = 10.0 * reference_gloria(regions, words, mask, 4.0, 5.0)
    expected = 0.0
    for i in range(3):
        expected += -torch.log_softmax(logits[i], 0)[i] - torch.log_softmax(logits[:, i], 0)[i]
    assert gloria_local_loss(regions, words, mask, 4.0, 5.0, 10.0).item() == pytest.approx(expected.item() / 6, abs=1e-9)


def test_gloria_ignores_padding_content():
    g = torch.Generator().manual_seed(3)
    regions, words = torch.randn(2, 3, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    mask = torch.tensor([[True, True, False, False, False], [True, True, True, False, False]])
    changed = words.clone()
    changed[~mask] = 100.0
    assert torch.allclose(gloria_similarity(regions, words, mask, 4.0, 5.0), gloria_similarity(regions, changed, mask, 4.0, 5.0))


def test_identity_targets_are_plain_clip():
    g = torch.Generator().manual_seed(1)
    image, text = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(5, 8, generator=g, dtype=torch.float64)
    scale = torch.tensor(4.0, dtype=torch.float64)
    eye = torch.eye(5, dtype=torch.float64)
    assert torch.allclose(clip_loss(image, text, scale, eye), clip_loss(image, text, scale), atol=1e-12)


def test_soft_targets_by_hand():
    """Two samples with the same findings share the target: each row's target is (1/2, 1/2), so with equal
    logits the loss is log 2 whatever the scale, where plain CLIP would pay for not telling them apart."""
    same = torch.ones(2, 3)
    targets = torch.full((2, 2), 0.5)
    assert clip_loss(same, same, torch.tensor(10.0), targets).item() == pytest.approx(math.log(2))
    assert clip_loss(same, same, torch.tensor(10.0)).item() == pytest.approx(math.log(2))
    apart = torch.eye(2)
    assert clip_loss(apart, apart, torch.tensor(10.0), targets).item() > clip_loss(same, same, torch.tensor(10.0), targets).item()


def test_label_targets_are_uniform_over_matching_findings_at_low_temperature():
    from synthvlp.pretrain.labels import label_targets

    labels = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]])
    targets = label_targets(labels, labels, temperature=0.01)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(4))
    torch.testing.assert_close(targets[0], torch.tensor([0.5, 0.5, 0.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(targets[3], torch.tensor([0.0, 0.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    soft = label_targets(labels, labels, temperature=1.0)  # MedCLIP's: partial matches get some weight
    assert soft[3, 0] > soft[0, 2] > 0
