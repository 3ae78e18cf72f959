"""The ``phantom`` backend: each sample drawn from its entity plan, with a mask and box per drawn finding.

``images.phantom`` picks the drawing: ``projection`` (``synthvlp.generation.phantom``, a projected 3D thorax with
``images.appearance``) or ``classic`` (``synthvlp.generation.phantom.classic``, painted 2D anatomy).
"""

from __future__ import annotations

from synthvlp.config import RunConfig
from synthvlp.errors import ConfigError
from synthvlp.generation.images import (Advance, ImageBatch, Renderer, box_row, encode_png, manifest_columns, sample_files,
                                        sample_meta)
from synthvlp.seeding import sample_rng, sample_seed


def phantom_appearance(config: RunConfig):
    """The phantom's ``Appearance`` with ``images.appearance`` applied; a ConfigError naming an unknown range."""
    from synthvlp.generation.phantom.appearance import Appearance

    try:
        return Appearance.from_dict(config.images.appearance)
    except ValueError as exc:
        raise ConfigError(f"images.appearance: {exc}") from None


class PhantomRenderer(Renderer):
    """Draws every planned finding where it appears, so each image comes with pixel-exact grounding masks
    (``<key>.seg.png``) and boxes; entities it cannot draw are counted in ``undrawable``."""

    def _drawing(self):
        """The drawing module ``images.phantom`` names and its extra keyword arguments."""
        from synthvlp.generation import phantom
        from synthvlp.generation.phantom import classic

        if self.config.images.phantom == "classic":
            if self.config.images.appearance:
                raise ConfigError("images.appearance: these ranges are the projection phantom's; set images.phantom: projection")
            return classic, {}
        return phantom, {"appearance": phantom_appearance(self.config)}

    def render(self, rows: list[dict], advance: Advance) -> ImageBatch:
        from synthvlp.masks import encode_masks

        drawing, extra = self._drawing()
        images, seed = self.config.images, self.config.run.seed
        samples, seeds, boxes = [], [], []
        undrawable: dict[str, int] = {}
        for row in rows:
            key, attempt = row["id"], row.get("image_attempt", 0)
            text = f"{row['findings']} {row['impression']}"
            rendering = drawing.render(row["planned_entities"], images.size, sample_rng(seed, key, "image", attempt), text, images.bit_depth, **extra)
            for name in rendering.undrawable:
                undrawable[name] = undrawable.get(name, 0) + 1
            sample_boxes = [box_row(f.name, f.laterality, f.box) for f in rendering.findings]
            meta = {**sample_meta(row), "masks": [{**b, "bit": i} for i, b in enumerate(sample_boxes)], "undrawable": rendering.undrawable}
            sample = sample_files(row, encode_png(rendering.image), meta)
            sample["seg.png"] = encode_masks([f.mask for f in rendering.findings])
            samples.append(sample)
            seeds.append(sample_seed(seed, key, "image", attempt))
            boxes.append(sample_boxes)
            advance(1)
        generator = [f"{drawing.NAME}@{drawing.VERSION}"] * len(rows)
        return ImageBatch(samples, manifest_columns(rows, generator, seeds, boxes), undrawable)
