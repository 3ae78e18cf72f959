"""Contrastive objectives: CLIP/ConVIRT InfoNCE on global embeddings and GLoRIA's word-to-region local loss.

Both take whole batches and compute every image-report pair at once with tensor ops (no per-sample loops), so
they run at the speed of a few matmuls and stay differentiable through DDP feature gathering. Temperatures and
weights come from config (``synthvlp.config.GloriaSection``); nothing is hard-coded here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over (n, d) embeddings; row i of each is a matching pair.

    ``scale`` is the learnable inverse temperature as open_clip models return it (``logit_scale.exp()``): CLIP's
    parameterisation of ConVIRT's objective, with equal weights on the image-to-text and text-to-image terms.
    ``targets`` (n, n), row-stochastic, replaces the identity target (MedCLIP's semantic matching, see
    ``synthvlp.pretrain.labels``); the text-to-image term uses its transpose renormalised over images.
    """
    image = F.normalize(image, dim=-1)
    text = F.normalize(text, dim=-1)
    logits = scale * image @ text.T
    if targets is None:
        pairs = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, pairs) + F.cross_entropy(logits.T, pairs)) / 2
    by_text = targets.T / targets.T.sum(dim=-1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, by_text)) / 2


def gloria_similarity(
    regions: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor, attention_temperature: float, word_temperature: float
) -> torch.Tensor:
    """(n_images, n_reports) local similarity of every image to every report (GLoRIA eqs. 3-6).

    regions (n, r, d) and words (m, t, d) are local features; word_mask (m, t) is True for real words. Each word
    attends over one image's regions with softmax(attention_temperature * cosine); the attended context is
    compared with the word by cosine, and the words' scores are pooled with a log-sum-exp sharpened by
    word_temperature: log(sum_i exp(word_temperature * s_i)) / word_temperature.
    """
    regions = F.normalize(regions, dim=-1)
    words = F.normalize(words, dim=-1)
    # (n, m, t, r): word t of report m against region r of image n
    scores = torch.einsum("nrd,mtd->nmtr", regions, words)
    attention = torch.softmax(attention_temperature * scores, dim=-1)
    context = F.normalize(torch.einsum("nmtr,nrd->nmtd", attention, regions), dim=-1)
    word_scores = (context * words.unsqueeze(0)).sum(-1)  # (n, m, t)
    word_scores = word_scores.masked_fill(~word_mask.unsqueeze(0), float("-inf"))
    return torch.logsumexp(word_temperature * word_scores, dim=-1) / word_temperature


def gloria_local_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    attention_temperature: float,
    word_temperature: float,
    logit_temperature: float,
) -> torch.Tensor:
    """Symmetric cross-entropy over ``logit_temperature`` x the local similarity matrix (GLoRIA's local term)."""
    logits = logit_temperature * gloria_similarity(regions, words, word_mask, attention_temperature, word_temperature)
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
