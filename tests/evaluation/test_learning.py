"""A model trained by synthvlp must learn what it is shown: a trivially separable image-report task, end to end.

Each film shows a nodule (a bright disc anywhere in the middle), a pleural effusion (a bright band along the
bottom) or neither, and its report, written by the quickstart's template writer, says which (and that the other
is absent). The engine trains the quickstart's model on them for a few dozen steps; then, on held-out films, the
evaluate stage's zero-shot scorer (each finding's "There is X." against "There is no X.") must tell each finding
from normal films, and the finding prompts must tell the two findings apart (CLIP's softmax over class prompts).
An untrained model separates such films by some direction of its features too, but only training ties those
directions to the right words: over a few random initialisations of the same architecture the same figures
average near chance. A trainer that does not learn (a collapsed loss, a broken target, a transform that erases
the image) fails here in seconds.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from synthvlp.config import PretrainSection
from synthvlp.evaluation.inference import ImageTextEngine
from synthvlp.generation.writers.template import write_report
from synthvlp.pretrain.engine import train
from synthvlp.store import write_shard

FINDINGS = ("nodule", "pleural effusion")


def report(finding: str | None, rng: np.random.Generator) -> str:
    """The quickstart's template writer states the finding (or the absence of both) in one of its phrasings."""
    entities = [{"name": name, "category": "ABNORMALITY", "assertion": "present" if name == finding else "absent",
                 "laterality": ("left", "right")[int(rng.integers(2))] if name == finding else None} for name in FINDINGS]
    entities.append({"name": "clear lungs" if finding is None else "normal heart size", "category": "NON-ABNORMALITY", "assertion": "present", "laterality": None})
    draft = write_report(entities, rng)
    return f"FINDINGS: {draft.findings} IMPRESSION: {draft.impression}"


def film(rng: np.random.Generator, finding: str | None, size: int = 64) -> Image.Image:
    """A noisy grey film with its finding drawn in; every film is brought to the same mean brightness, so the
    findings differ in where the signal is, not in how bright the film is."""
    pixels = 90 + 20 * rng.standard_normal((size, size))
    rows, cols = np.ogrid[:size, :size]
    if finding == "nodule":
        y, x = rng.integers(12, size - 20, 2)
        pixels[(rows - y) ** 2 + (cols - x) ** 2 <= rng.integers(5, 9) ** 2] += 110
    elif finding == "pleural effusion":
        pixels[size - rng.integers(10, 18):, :] += 110
    pixels += 120 - pixels.mean()
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def zero_shot_aucs(checkpoint, images, kinds, random_init_seed=None) -> list[float]:
    """AUC of each finding against normal films (the evaluate stage's positive/negative prompt pair), then of
    nodule against effusion among the abnormal films (the two findings' positive prompts against each other)."""
    import torch

    from synthvlp.config import POSITIVE_PROMPTS

    engine = ImageTextEngine.from_checkpoint(checkpoint, random_init_seed=random_init_seed)
    features = engine.encode_images(len(images), lambda i: images[i])
    scores = engine.zero_shot_probabilities(features, list(FINDINGS))
    kinds = np.array([str(k) for k in kinds])
    detection = [roc_auc_score(kinds[kinds != other] == name, scores[kinds != other, c])
                 for c, (name, other) in enumerate(zip(FINDINGS, reversed(FINDINGS), strict=True))]
    with torch.no_grad():
        logits = (features @ engine.class_text_embeddings(list(FINDINGS), POSITIVE_PROMPTS).T).numpy()
    abnormal = kinds != "None"
    return [*detection, roc_auc_score(kinds[abnormal] == FINDINGS[0], logits[abnormal, 0] - logits[abnormal, 1])]


def test_a_trivially_separable_task_is_learned(tmp_path):
    rng = np.random.default_rng(0)
    kinds = [(None, *FINDINGS)[int(k)] for k in rng.integers(0, 3, 288)]
    samples = [{"__key__": f"n{i:04d}", "png": png(film(rng, k)), "txt": report(k, rng).encode()} for i, k in enumerate(kinds)]
    write_shard(tmp_path / "train-000000.tar", samples)
    settings = PretrainSection(model="synthvlp-cnn-tiny", targets="labels", batch_size=32, max_steps=48, lr=1e-3,
                               warmup_steps=5, threads=2, tensorboard=False, checkpoint_every=48)
    train(settings, [tmp_path / "train-000000.tar"], tmp_path / "out", seed=0, say=lambda _: None)
    held_out = [(None, *FINDINGS)[i % 3] for i in range(120)]
    images = [film(np.random.default_rng(1000 + i), k) for i, k in enumerate(held_out)]
    trained = zero_shot_aucs(tmp_path / "out" / "checkpoint.pt", images, held_out)
    untrained = [zero_shot_aucs(tmp_path / "out" / "checkpoint.pt", images, held_out, random_init_seed=seed) for seed in range(8)]
    assert min(trained) > 0.9, f"AUCs (nodule vs normal, effusion vs normal, nodule vs effusion) {trained} after training"
    assert np.mean(untrained) < 0.75, f"untrained models score {untrained}: the task no longer needs learning"
