"""The ``diffusers`` backend: a local text-to-image pipeline (``synthvlp.generation.diffusion``) renders each
report's IMPRESSION (or, for a pipeline ``synthvlp render train`` wrote, the caption it was trained on); it knows no regions, so its samples have no masks or boxes."""

from __future__ import annotations

from synthvlp.config import RunConfig
from synthvlp.generation.images import Advance, ImageBatch, Renderer, caption, encode_png, manifest_columns, sample_files, sample_meta
from synthvlp.seeding import sample_seed


class DiffusersRenderer(Renderer):
    """Batches of ``images.diffusers.batch_size`` prompts, each sample with its own seeded generator."""

    work_kind = "compute"

    @classmethod
    def check(cls, config: RunConfig) -> None:
        if config.images.diffusers.path is None:
            raise ValueError("images.backend 'diffusers' needs images.diffusers.path, the local pipeline folder")
        if config.images.size % 8:
            raise ValueError(f"images.backend 'diffusers' needs an images.size divisible by 8 (the VAE downsamples 8x), got {config.images.size}")

    def render(self, rows: list[dict], advance: Advance) -> ImageBatch:
        from synthvlp.generation.diffusion import load_renderer

        settings = self.config.images.diffusers
        pipeline = load_renderer(settings)
        samples, seeds = [], []
        truncated = 0
        for start in range(0, len(rows), settings.batch_size):
            batch = rows[start : start + settings.batch_size]
            batch_seeds = [sample_seed(self.config.run.seed, row["id"], "image", row.get("image_attempt", 0)) for row in batch]
            prompts = [pipeline.prompt(caption(row["findings"], row["impression"]), row["impression"], row["planned_entities"]) for row in batch]
            result = pipeline.render(prompts, batch_seeds, self.config.images.size)
            truncated += result.truncated
            for row, image in zip(batch, result.images, strict=True):
                samples.append(sample_files(row, encode_png(image), sample_meta(row)))
            seeds.extend(batch_seeds)
            advance(len(batch))
        warnings = {"impression truncated to the tokenizer's max length": truncated} if truncated else {}
        generator = [pipeline.name] * len(rows)
        return ImageBatch(samples, manifest_columns(rows, generator, seeds, [None] * len(rows)), {}, warnings)
