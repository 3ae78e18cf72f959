"""The diffusers backend: a local text-to-image pipeline (RoentGen layout) rendering each report's IMPRESSION (or,
for a pipeline ``synthvlp render train`` wrote, the caption it was trained on: the whole report and/or the plan).

SynCXR conditions RoentGen (Stable Diffusion fine-tuned on MIMIC-CXR) on the IMPRESSION only. Any
``DiffusionPipeline`` saved with ``save_pretrained`` works, including the pixel-space one ``synthvlp render
train`` writes (``synthvlp.pixel_diffusion``). Each sample gets its own CPU ``torch.Generator``
seeded from its sample seed, so its image depends neither on the batch it was rendered in nor on the device.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthvlp.captions import conditioning
from synthvlp.config import DiffusersSection
from synthvlp.errors import UserError

log = logging.getLogger(__name__)

_CONFIG_FILES = {
    "tokenizer": ("tokenizer_config.json", "vocab.json", "tokenizer.json"),
    "scheduler": ("scheduler_config.json",),
    "feature_extractor": ("preprocessor_config.json",),
}


def check_folder(path: Path) -> dict:
    """Raise ``UserError`` naming the first missing part of a saved pipeline; return its ``model_index.json``."""
    where = "images.diffusers.path"
    if not path.is_dir():
        raise UserError(f"{where} = {path}: not a folder; point it at a pipeline saved with save_pretrained (e.g. RoentGen)")
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise UserError(f"{where} = {path}: model_index.json is missing; this is not a diffusers pipeline folder")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{index_file}: not valid JSON ({exc})") from None
    if "unet" not in index and "transformer" not in index:
        raise UserError(f"{where} = {path}: model_index.json lists no unet (or transformer), the denoiser a diffusion pipeline renders with")
    for part, spec in index.items():
        if part.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue  # metadata, or an optional part saved as null (e.g. no safety checker)
        folder = path / part
        if not folder.is_dir():
            raise UserError(f"{where} = {path}: part {part!r} ({spec[1]}) listed in model_index.json has no folder {folder.name}/")
        wanted = _CONFIG_FILES.get(part, ("config.json",))
        if not any((folder / name).is_file() for name in wanted):
            raise UserError(f"{folder}: part {part!r} has none of {list(wanted)}; the folder is incomplete")
    return index


def _device_and_dtype(settings: DiffusersSection) -> tuple[torch.device, torch.dtype]:
    device = settings.device if settings.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("images.diffusers.device = cuda, but torch sees no CUDA device; use cpu or auto")
    name = settings.dtype if settings.dtype != "auto" else ("float16" if device == "cuda" else "float32")
    if name == "float16" and device == "cpu":
        raise UserError("images.diffusers.dtype = float16 needs cuda; use float32 (or bfloat16) on cpu")
    return torch.device(device), getattr(torch, name)


@dataclass
class Rendered:
    images: list[np.ndarray]  # uint8 (size, size) grayscale
    truncated: int  # prompts cut to the tokenizer's max length


class DiffusionRenderer:
    """A loaded pipeline plus the settings every call uses."""

    def __init__(self, settings: DiffusersSection) -> None:
        path = Path(settings.path)
        index = check_folder(path)
        self.settings = settings
        self.device, dtype = _device_and_dtype(settings)
        from diffusers import DiffusionPipeline  # seconds to import: only once the folder and device are known good

        from synthvlp.pixel_diffusion import PixelDiffusionPipeline  # what synthvlp render train writes

        kind = PixelDiffusionPipeline if index.get("_class_name") == PixelDiffusionPipeline.__name__ else DiffusionPipeline
        try:
            pipeline = kind.from_pretrained(path, dtype=dtype, local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise UserError(f"images.diffusers.path = {path}: cannot load the pipeline: {exc}") from None
        pipeline.set_progress_bar_config(disable=True)
        self.pipeline = pipeline.to(self.device)
        self.name = f"diffusers:{path.name}"
        self.index = index  # the caption keys are read from the file: a StableDiffusionPipeline drops those its __init__ does not take

    def prompt(self, report: str, impression: str, entities: list[dict]) -> str:
        """The prompt of one sample: its IMPRESSION, or for a pipeline ``synthvlp render train`` wrote, the caption
        it was trained on (``caption_text``/``caption_plan`` in its model_index.json; ``synthvlp.captions``)."""
        if "caption_text" not in self.index:
            return impression
        return conditioning(report, self.index["caption_text"], entities if self.index.get("caption_plan") else None)

    def fit_prompt(self, text: str) -> tuple[str, bool]:
        """``text`` cut to what the text encoder reads (max length including start/end tokens), and whether it was."""
        tokenizer = self.pipeline.tokenizer
        limit = tokenizer.model_max_length
        if len(tokenizer(text, truncation=True, max_length=limit + 1)["input_ids"]) <= limit:
            return text, False
        kept = tokenizer(text, truncation=True, max_length=limit)["input_ids"]
        return tokenizer.decode(kept, skip_special_tokens=True), True

    def render(self, prompts: list[str], seeds: list[int], size: int) -> Rendered:
        """One grayscale image per prompt; ``seeds[i]`` alone determines image ``i``."""
        fitted = [self.fit_prompt(p) for p in prompts]
        truncated = sum(cut for _, cut in fitted)
        if truncated:
            log.warning("%d of %d impressions truncated to the tokenizer's %d tokens", truncated, len(prompts), self.pipeline.tokenizer.model_max_length)
        s = self.settings
        output = self.pipeline(
            prompt=[text for text, _ in fitted],
            negative_prompt=[s.negative_prompt] * len(prompts) if s.negative_prompt else None,
            num_inference_steps=s.steps,
            guidance_scale=s.guidance_scale,
            height=size,
            width=size,
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            output_type="np",
        )
        images = np.asarray(output.images, dtype=np.float32)
        gray = images.mean(axis=-1) if images.ndim == 4 else images
        return Rendered([np.round(np.clip(g, 0.0, 1.0) * 255).astype(np.uint8) for g in gray], truncated)


_loaded: dict[tuple, DiffusionRenderer] = {}


def load_renderer(settings: DiffusersSection) -> DiffusionRenderer:
    """The renderer for ``settings``; a pipeline (seconds to minutes to load) is loaded once per process."""
    key = (str(settings.path), settings.device, settings.dtype)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = DiffusionRenderer(settings)
    renderer = _loaded[key]
    renderer.settings = settings
    return renderer
