"""Finding labels read back from report text, for label-aware contrastive targets (MedCLIP's semantic matching).

Plain CLIP treats every other report in a batch as a negative. Templated synthetic reports (and real ones) often
state the same findings, so many of those "negatives" describe exactly what the image shows, and the loss pushes
the image away from a correct description. MedCLIP replaces the identity target with one derived from label
similarity. Its labels come from a report labeller; ours come from the entity extractor that already verifies
every synthetic report, so the same code labels synthetic shards, a real CSV of reports and captions written from
a benchmark's labels, and a sample's target never depends on where it came from.
"""

from __future__ import annotations

from functools import cached_property

import torch
import torch.nn.functional as F

ABNORMAL = ("ABNORMALITY", "DISEASE")
NO_FINDING = "no finding"


class FindingLabels:
    """``labels(text)`` -> a multi-hot float vector over the vocabulary's abnormal entities plus "no finding".

    A finding counts when the extractor reads it as present or uncertain (an uncertain finding is more like the
    images that have it than like normal ones); a report with no such finding gets the "no finding" column, so
    two normal reports match each other and no vector is all zeros.
    """

    @cached_property
    def _extractor(self):
        from synthvlp.entities import EntityExtractor

        return EntityExtractor()

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Column names: the vocabulary's abnormal entities in vocabulary order, then ``NO_FINDING``."""
        return tuple(e.name for e in self._extractor.vocab.entities if e.category in ABNORMAL) + (NO_FINDING,)

    @cached_property
    def _column(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def __call__(self, text: str) -> torch.Tensor:
        vector = torch.zeros(len(self.names))
        for mention in self._extractor.extract([text])[0]:
            column = self._column.get(mention.canonical)
            if column is not None and mention.category in ABNORMAL and mention.assertion != "absent":
                vector[column] = 1.0
        if not vector.any():
            vector[-1] = 1.0
        return vector

    def __getstate__(self) -> dict:
        """DataLoader workers rebuild the extractor instead of pickling its phrase tables."""
        return {}


def label_targets(image_labels: torch.Tensor, text_labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """(n_images, n_texts) row-stochastic targets: softmax over texts of label cosine similarity / ``temperature``.

    MedCLIP uses temperature 1 on cosines in [0, 1], a soft target that still spreads over unrelated reports; a
    small temperature concentrates the target on reports with the same findings (as ``temperature -> 0`` it is
    uniform over exact matches, the pair itself included).
    """
    similarity = F.normalize(image_labels.float(), dim=-1) @ F.normalize(text_labels.float(), dim=-1).T
    return torch.softmax(similarity / temperature, dim=-1)
