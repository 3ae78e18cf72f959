"""CXR entity vocabulary and extractor: one source of truth for sampling, verifying and counting entities."""

from synthvlp.entities.extractor import EntityExtractor, Mention
from synthvlp.entities.vocabulary import (
    CATEGORIES,
    CHEXPERT_LABELS,
    Entity,
    Vocabulary,
    VocabularyError,
    load_vocabulary,
)

__all__ = [
    "CATEGORIES",
    "CHEXPERT_LABELS",
    "Entity",
    "EntityExtractor",
    "Mention",
    "Vocabulary",
    "VocabularyError",
    "load_vocabulary",
]
