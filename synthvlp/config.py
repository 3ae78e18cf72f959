"""The run config: one typed model, loaded from YAML plus ``key.path=value`` overrides.

This module is the single source of truth for every setting a run has. Validation errors name the file (or
``command line``), the dotted key path, the offending value and what was expected, so the CLI can print them
without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from synthvlp.errors import ConfigError
from synthvlp.registry import Registry

T = TypeVar("T", bound=BaseModel)
STAGES: tuple[str, ...] = ("plan", "reports", "images", "filter", "balance", "pretrain", "evaluate")
"""Stage names in run order; the runner owns what each one does."""

RENDERERS: Registry = Registry("images.backend", {
    "diffusers": "synthvlp.generation.renderers.diffusers:DiffusersRenderer",
    "phantom": "synthvlp.generation.renderers.phantom:PhantomRenderer",
    "source": "synthvlp.generation.renderers.source:SourceRenderer",
})
"""The image renderers ``images.backend`` names, each a ``synthvlp.generation.images.Renderer`` (docs/extending.md)."""

OPERATIONAL = "operational"
"""The ``json_schema_extra`` key that marks a setting as operational (see ``operational``); incidental settings
carry it too."""
INCIDENTAL = "incidental"
"""The ``json_schema_extra`` key that marks a setting as incidental (see ``incidental``)."""


def operational(*args: Any, **kwargs: Any) -> Any:
    """A ``Field`` for a setting that changes how training goes but not the weights it ends with (threads,
    checkpoint cadence, log writers, a trainer's own folder). The training engines leave it out of their state
    keys (``without_operational``), so changing one keeps a run resumable; a run's stage fingerprints still count
    it (the stage's files, such as its kept states and event logs, depend on it), so the run folder asks for
    --force and redoes that stage, which resumes the finished state."""
    return Field(*args, json_schema_extra={OPERATIONAL: True}, **kwargs)


def incidental(*args: Any, **kwargs: Any) -> Any:
    """A ``Field`` for a setting nothing a run writes depends on (names, places, where units execute, the corpus
    only the run report compares with). Left out of every fingerprint: the stages' (``fingerprinted``), the run
    folder's config check (``output_differences``) and the training state keys; changing one redoes nothing."""
    return Field(*args, json_schema_extra={OPERATIONAL: True, INCIDENTAL: True}, **kwargs)


def marked(model: type[BaseModel], mark: str, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths of ``model``'s fields that carry ``mark``, at any depth of nested sections (``X`` or ``X | None``)."""
    paths = []
    for name, field in model.model_fields.items():
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(mark):
            paths.append((*prefix, name))
            continue
        nested = (field.annotation, *(get_args(field.annotation) if get_origin(field.annotation) in (Union, UnionType) else ()))
        for section in (t for t in nested if isinstance(t, type) and issubclass(t, BaseModel)):
            paths += marked(section, mark, (*prefix, name))
    return paths


def _without(plain: dict[str, Any], paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """A copy of ``plain`` without the keys at ``paths`` (those whose section is absent or None are skipped)."""
    plain = dict(plain)
    for head in {path[0] for path in paths}:
        rest = [path[1:] for path in paths if path[0] == head]
        if () in rest:
            plain.pop(head, None)
        elif isinstance(plain.get(head), dict):
            plain[head] = _without(plain[head], rest)
    return plain


def without_operational(model: BaseModel) -> dict[str, Any]:
    """``model`` as plain JSON values without its ``operational`` (and ``incidental``) fields, at any depth of
    nested sections: what trained weights depend on."""
    return _without(model.model_dump(mode="json"), marked(type(model), OPERATIONAL))


def fingerprinted(config: RunConfig) -> dict[str, Any]:
    """``config`` as written to a run folder without its ``incidental`` settings: what the stage fingerprints hash."""
    return _without(config.to_plain(), marked(RunConfig, INCIDENTAL))


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


class RaySection(Section):
    """Where and how wide the per-unit stages run under ``run.executor: ray`` (``synthvlp/executors.py``)."""

    address: str | None = Field(None, description="Ray cluster to join ('auto': the one on this node, or 'ray://host:10001'); None joins $RAY_ADDRESS or starts a local instance.")
    actors: int = Field(2, ge=1, description="Actors per stage; each builds its own runner, so models load once per actor, not per unit.")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs each actor reserves.")
    images_gpus_per_actor: float = Field(0.0, ge=0, description="GPUs each images-stage actor reserves (1 for the diffusers backend on a GPU); other stages reserve none.")


class RunSection(Section):
    """Where the run lives, how big it is and the seed everything derives from."""

    name: str = incidental("quickstart", min_length=1, description="Human-readable run name.")
    out_dir: Path = incidental(Path("runs/quickstart"), description="Run folder; relative paths are from the CWD.")
    seed: int = Field(0, ge=0, description="Run seed; each sample's seed derives from (seed, sample id).")
    n_samples: int = Field(2000, ge=1, description="Number of synthetic image-report pairs to plan.")
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of samples held out for evaluation.")
    shard_size: int = Field(1000, ge=1, description="Samples per WebDataset shard (the unit of resuming).")
    executor: Literal["local", "ray"] = incidental(
        "local", description="Where per-unit stages (plan, reports, images, filter) run: 'local' in this process, 'ray' on a Ray actor pool (run.ray); outputs are identical."
    )
    ray: RaySection = incidental(default_factory=RaySection)


class LabelSetSection(Section):
    """Real films that come with labels but no reports (NIH ChestX-ray14, CheXpert, ...): each film becomes a sample
    whose plan is its labels, so the report writer captions it and images.backend 'source' stores the film itself.

    The set is read by a benchmark adapter (``synthvlp evaluate --help`` lists them). ``run.n_samples`` films of
    ``train_splits`` and ``test_splits``, drawn in a seeded order, are planned; films of other splits are left out. Labels that are entities of the vocabulary become present findings; negatives among
    ``plan.findings`` join the normal-side pool as absences, and boxes become the sample's finding masks.
    """

    benchmark: str = Field("nih", min_length=1, description="Adapter that reads the set (as in evaluate.benchmarks).")
    path: Path = Field(..., description="The set's folder or label file, as published.")
    train_splits: list[str] = Field(default_factory=lambda: ["train"], min_length=1, description="The set's splits planned as training samples.")
    test_splits: list[str] = Field(default_factory=lambda: ["test"], description="The set's splits planned as the run's test split.")

    @model_validator(mode="after")
    def _splits_disjoint(self) -> LabelSetSection:
        both = sorted(set(self.train_splits) & set(self.test_splits))
        if both:
            raise ValueError(f"splits {both} are listed as both train_splits and test_splits")
        return self


class PlanSection(Section):
    """Balanced entity plans (SynCXR step 2): k abnormal entities and m normal-side statements per report.

    Every pool item has a frequency cap; once reached it leaves the pool, which flattens the long tail a real
    corpus has. The paper did not publish k, m or the cap, so all three are settings.
    """

    findings: list[str] = Field(
        default_factory=lambda: [
            "cardiomegaly",
            "pleural effusion",
            "pneumothorax",
            "consolidation",
            "pulmonary edema",
            "atelectasis",
            "nodule",
            "emphysema",
        ],
        min_length=1,
        description="ABNORMALITY/DISEASE pool (the k side); each must be in the entity vocabulary.",
    )
    min_findings: int = Field(0, ge=0, description="k range low end: fewest abnormal findings (0 allows normal reports).")
    max_findings: int = Field(2, ge=0, description="k range high end: most abnormal findings in one report.")
    normals: list[str] = Field(
        default_factory=lambda: [
            "normal heart size",
            "normal mediastinum",
            "clear lungs",
            "normal lung volumes",
            "normal pulmonary vascularity",
            "sharp costophrenic angles",
            "midline trachea",
            "intact osseous structures",
        ],
        description="NON-ABNORMALITY/NON-DISEASE/ANATOMY pool (the m side); the absence of each finding joins it.",
    )
    absences: bool = Field(True, description="Whether 'no <finding>' for each of plan.findings is in the m-side pool.")
    min_normals: int = Field(1, ge=0, description="m range low end: fewest normal-side statements per report.")
    max_normals: int = Field(3, ge=0, description="m range high end: most normal-side statements per report.")
    tau_max: int | None = Field(
        None, ge=1, description="Frequency cap per pool item; None sets cap_slack x its uniform share of the run."
    )
    cap_slack: float = Field(1.1, ge=1.0, description="With tau_max None: cap = ceil(cap_slack * n_samples * mean(k or m) / pool size).")
    labels: LabelSetSection | None = Field(
        None, description="Plan one sample per film of a real labelled set (its labels are the plan) instead of drawing balanced plans; None draws plans.")
    source_corpus: Path | None = incidental(
        None, description="Real report corpus (IU XML .tgz/folder, .csv, .parquet) whose entity distribution the run report compares the plan with."
    )

    @model_validator(mode="after")
    def _range_is_ordered(self) -> PlanSection:
        if self.min_findings > self.max_findings:
            raise ValueError(f"min_findings ({self.min_findings}) must not exceed max_findings ({self.max_findings})")
        if self.max_findings > len(self.findings):
            raise ValueError(f"max_findings ({self.max_findings}) exceeds the {len(self.findings)} findings listed")
        if self.min_normals > self.max_normals:
            raise ValueError(f"min_normals ({self.min_normals}) must not exceed max_normals ({self.max_normals})")
        pool = len(self.normals) + (len(self.findings) if self.absences else 0)
        if self.max_normals > pool:
            raise ValueError(f"max_normals ({self.max_normals}) exceeds the {pool} normal-side items (normals + absences)")
        return self

    @field_validator("findings", "normals")
    @classmethod
    def _unique(cls, value: list[str], info: ValidationInfo) -> list[str]:
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"{info.field_name} are listed twice: {duplicates}")
        return value


class ChatEndpointSection(Section):
    """Where an OpenAI-compatible chat server is and how hard to push it (``synthvlp.chat_client``)."""

    base_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8000/v1"], min_length=1, description="OpenAI-compatible endpoints; requests are spread over all of them."
    )
    model: str = Field("default", description="Model name sent to the server ('default' takes the first one /v1/models lists).")
    api_key_env: str = Field("SYNTHVLP_API_KEY", description="Environment variable holding the API key, if the server needs one.")
    concurrency: int = Field(32, ge=1, le=4096, description="Requests in flight at once over all base URLs.")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds.")
    request_retries: int = Field(6, ge=0, description="Retries of one request on 429/5xx/timeouts/connection errors/malformed output.")
    backoff_s: float = Field(0.5, gt=0, description="First retry delay; doubles per retry, with full jitter.")
    backoff_max_s: float = Field(30.0, gt=0, description="Largest retry delay.")


class ReportsSection(ChatEndpointSection):
    """How report text is written and verified (SynCXR step 3).

    Every backend's draft is re-read by the entity extractor; a report is accepted only when it states every
    planned entity with the planned assertion and no unplanned abnormal one, else it is rewritten with feedback.
    """

    backend: Literal["template", "openai", "transformers"] = Field(
        "template", description="'template' needs no model; 'openai' talks to any OpenAI-compatible server (vLLM, synthvlp serve); 'transformers' runs a local model in-process."
    )
    max_retries: int = Field(3, ge=0, description="Rewrites after a draft fails verification (R); attempts and reasons go to the manifest.")
    prompts: Path | None = Field(None, description="Folder with system.j2, user.j2 and optional examples.yaml (model backends); None uses the packaged ones (synthvlp/generation/prompt_templates).")
    few_shot: int = Field(2, ge=0, description="Worked examples from examples.yaml put before each request.")
    structured_output: Literal["auto", "json_schema", "text"] = Field(
        "auto", description="'json_schema' makes the server enforce the FINDINGS/IMPRESSION schema; 'auto' falls back to plain text if the server refuses it."
    )
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(384, ge=16, le=32768, description="Largest completion per request.")
    model_path: Path | None = Field(None, description="transformers backend: a local HF model folder or .gguf file.")
    device: str = Field("cpu", description="transformers backend: torch device.")
    batch_size: int = Field(8, ge=1, description="transformers backend: prompts generated together.")


class DiffusersSection(Section):
    """A local text-to-image diffusion pipeline (e.g. RoentGen) conditioned on each report's IMPRESSION."""

    path: Path | None = Field(None, description="Local pipeline folder (model_index.json and its parts); required.")
    steps: int = Field(50, ge=1, description="Denoising steps.")
    guidance_scale: float = Field(7.5, ge=0.0, description="Classifier-free guidance scale (<= 1 disables it).")
    negative_prompt: str = Field("", description="Negative prompt for every image ('' for none).")
    batch_size: int = Field(4, ge=1, description="Prompts per pipeline call; per-sample generators keep images batch-independent.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' is cuda when available, else cpu.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="'auto' is float16 on cuda and float32 on cpu (half precision needs cuda)."
    )


class ImagesSection(Section):
    """How images are rendered."""

    backend: str = Field(
        "phantom",
        description="The renderer, by its name in config.RENDERERS: 'phantom' draws each finding from the plan with exact "
        "masks and needs no weights; 'diffusers' runs a local diffusion pipeline (images.diffusers.path) on the "
        "IMPRESSION; 'source' stores each sample's own real film (plan.labels), resized to images.size, with its boxes as masks.",
    )
    size: int = Field(64, ge=16, le=4096, description="Square image side in pixels.")
    bit_depth: Literal[8, 16] = Field(8, description="PNG bits per pixel of phantom images (diffusers images are 8-bit).")
    phantom: Literal["classic", "projection"] = Field(
        "classic",
        description="Phantom renderer: 'classic' (painted 2D anatomy; what the quickstart's figures were measured on) "
        "or 'projection' (a projected 3D thorax with acquisition effects, closer to real films; the SynCXR recipes "
        "use it, since what a model learns from it carries better to real films; docs/rendering.md).",
    )
    appearance: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Projection phantom's exposure and display ranges, {name: [low, high]}, overriding its defaults, "
        "and optionally its display look-up table, tone: [levels at evenly spaced film values 0..1] "
        "(names: synthvlp.generation.phantom.appearance.Appearance); `synthvlp render calibrate` writes them.",
    )
    diffusers: DiffusersSection = Field(default_factory=DiffusersSection)

    @field_validator("appearance")
    @classmethod
    def _values_do_not_decrease(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        """Every setting is a non-decreasing list: a range's [low, high], a look-up table's levels."""
        for name, values in value.items():
            if name != "tone" and len(values) != 2:
                raise ValueError(f"{name}: a range is [low, high], got {values}")
            for low, high in zip(values, values[1:]):
                if low > high:
                    raise ValueError(f"{name}: low {low} is above high {high}" if len(values) == 2 else f"{name}: levels must not decrease, {low} then {high}")
        return value

    @field_validator("backend")
    @classmethod
    def _registered(cls, value: str) -> str:
        return RENDERERS.check(value)


class JudgeSection(ChatEndpointSection):
    """The optional multimodal-LLM judge: a vision chat model on an OpenAI-compatible server passes or rejects
    each image (``synthvlp/filtering/judge.py``)."""

    prompt: str = Field(
        "You review synthetic frontal chest X-rays made for training. Reject an image that is not a plausible "
        "frontal chest radiograph (missing or implausible anatomy, artefacts, text) or that contradicts the report "
        "when one is given. Answer as JSON: {\"verdict\": \"pass\" or \"reject\", \"reason\": \"...\"}.",
        min_length=1, description="System prompt; it must ask for a pass/reject verdict.")
    include_report: bool = Field(True, description="Send the sample's IMPRESSION beside the image, so the judge can check agreement.")
    structured_output: Literal["auto", "json_schema", "text"] = Field("auto", description="'auto' asks for the JSON verdict schema and falls back to text if the server refuses it.")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(128, ge=8, le=4096, description="Largest verdict completion.")


class FilterSection(Section):
    """Thresholds of the quality checks; each sample records every check's score and verdict."""

    min_std: float = Field(0.02, ge=0.0, description="Reject images whose intensity std (0-1 scale) is below this (blank).")
    max_saturated: float = Field(0.5, ge=0.0, le=1.0, description="Reject images with more clipped pixels than this share.")
    min_dynamic_range: float = Field(0.1, ge=0.0, le=1.0, description="Reject images whose 1st-99th percentile span is below this.")
    min_report_chars: int = Field(20, ge=0, description="Reject reports shorter than this many characters.")
    max_report_chars: int = Field(5000, ge=1, description="Reject reports longer than this many characters (runaway generation).")
    max_repeated_ngrams: float = Field(0.5, ge=0.0, le=1.0, description="Reject reports whose share of repeated word 3-grams exceeds this.")
    max_plan_mismatch: int = Field(0, ge=0, description="Reject reports whose abnormal findings differ from the plan in more than this many.")
    exemplar_dir: Path | None = Field(None, description="Folder of problematic exemplar images; None disables the exemplar filter.")
    exemplar_encoder: str = Field("gradient", description="'gradient' (embedded, no weights) or a local Hugging Face image-model folder.")
    exemplar_threshold: float = Field(0.5, ge=-1.0, le=1.0, description="Reject when the max cosine similarity to an exemplar reaches this.")
    duplicate_image_similarity: float | None = Field(0.999, gt=0.0, le=1.0, description="Reject images whose 16x16 thumbnail correlation with an earlier one reaches this; None disables.")
    regenerate: int = Field(2, ge=0, le=20, description="Re-render an image that fails an image check up to this many times, each with a new seed.")
    train_films: Path | None = Field(None, description="Memorisation guard: the training-film index a trained renderer wrote (<render train out_dir>/pipeline/training-films.npz); None disables it.")
    max_train_correlation: float = Field(0.97, gt=0.0, le=1.0, description="Reject images whose pixel correlation with their nearest training film reaches this (a copied patient): on NIH films at 64 px, held-out patients reach at most 0.943, re-exposed noisy copies at least 0.985.")
    duplicate_report_jaccard: float | None = Field(None, gt=0.0, le=1.0, description="Reject reports whose word-3-gram Jaccard to an earlier one reaches this; None disables.")
    judge: JudgeSection | None = Field(None, description="Multimodal-LLM judge on a vision chat server; None (the default) disables it.")

    @field_validator("exemplar_dir")
    @classmethod
    def _exemplars_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not Path(value).is_dir():
            raise ValueError(f"folder {str(value)!r} does not exist")
        return value


class BalanceSection(Section):
    """Which eligible samples (accepted, not duplicates) make the exported training and test sets."""

    max_samples: int | None = Field(None, ge=1, description="Budget of exported samples per split (None keeps all eligible).")
    target: Literal["none", "uniform", "temperature"] = Field("none", description="Target entity distribution of the train split.")
    entity_cap: int | None = Field(None, ge=1, description="uniform: most samples per finding (None: budget x findings per sample / findings).")
    temperature: float = Field(2.0, gt=0.0, description="temperature: target share proportional to frequency^(1/T); larger is flatter.")


class GloriaSection(Section):
    """GLoRIA's local-global objective: word-to-region attention; temperatures as in the GLoRIA paper."""

    attention_temperature: float = Field(4.0, gt=0.0, description="gamma1: sharpness of each word's attention over image regions.")
    word_temperature: float = Field(5.0, gt=0.0, description="gamma2: log-sum-exp sharpness pooling word scores into one image-report score.")
    logit_temperature: float = Field(10.0, gt=0.0, description="gamma3: scale of the local image-report scores in the cross-entropy.")
    local_weight: float = Field(1.0, ge=0.0, description="Weight of the local (word-region) loss.")
    global_weight: float = Field(1.0, ge=0.0, description="Weight of the global (pooled InfoNCE) loss.")
    local_dim: int = Field(128, ge=1, description="Size of the projected region and word features.")


class RealDataSection(Section):
    """A real paired corpus as a CSV: one row per image with its report text (MIMIC-CXR-style layout)."""

    csv: Path = Field(description="CSV file with an image path column and a report text column.")
    image_root: Path | None = Field(None, description="Folder image paths are relative to; None means the CSV's folder.")
    image_column: str = Field("image", min_length=1, description="Column holding each image's path.")
    text_column: str = Field("text", min_length=1, description="Column holding the report text the model trains on.")
    group_column: str | None = Field("patient_id", description="Column the held-out split groups by (a patient never straddles splits); None splits by row.")
    holdout_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Share of groups held out of pre-training (for a later evaluation), chosen by a seeded hash.")


OBJECTIVES: Registry = Registry("pretrain.objective", {
    "clip": "synthvlp.pretrain.engine:ClipObjective",
    "gloria": "synthvlp.pretrain.engine:GloriaObjective",
})
"""The training objectives ``pretrain.objective`` names, each a ``synthvlp.pretrain.engine.ClipObjective`` (docs/extending.md)."""


class PretrainSection(Section):
    """CLIP/ConVIRT or GLoRIA pre-training of an open_clip model on synthetic, real or mixed data.

    ``batch_size`` is the global batch: under torchrun each of N processes takes batch_size / N samples of it, and
    the features of all of them meet in one loss, so N processes train the same model as one.
    """

    model: str = Field("synthvlp-tiny", description="open_clip model config name (ours or open_clip's); `synthvlp models list`.")
    objective: str = Field(
        "clip", description="The training objective, by its name in config.OBJECTIVES: 'clip': symmetric InfoNCE (ConVIRT-style); 'gloria': plus GLoRIA's local word-region loss.")
    gloria: GloriaSection = Field(default_factory=GloriaSection)
    targets: Literal["pairs", "labels"] = Field(
        "pairs", description="'pairs': an image's only positive is its own report (CLIP/ConVIRT); 'labels': soft targets from the finding labels the entity extractor reads in each report (MedCLIP's semantic matching), so reports stating the same findings are not pushed apart.")
    label_temperature: float = Field(0.1, gt=0.0, description="targets=labels: softmax temperature over the label cosine similarity of two samples (MedCLIP uses 1; small values make only reports with the same findings positives).")
    recipe: Literal["synthetic", "real", "mixed"] = Field("synthetic", description="Training data: the run's exported shards, pretrain.real, or both.")
    mix: Literal["ratio", "concat"] = Field("concat", description="mixed: 'concat' visits every sample of both sets once per epoch; 'ratio' draws each sample from real with probability real_fraction.")
    real_fraction: float = Field(0.5, ge=0.0, le=1.0, description="mix=ratio: probability that a training sample is real.")
    real: RealDataSection | None = Field(None, description="The real dataset (recipes real and mixed).")
    shards: list[Path] | None = Field(None, description="WebDataset shards to train on, glob patterns allowed (e.g. other runs' dataset/train-*.tar, for mixed recipes); None means this run's dataset/train-*.tar.")
    epochs: int = Field(4, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimiser steps (None: epochs x steps per epoch).")
    batch_size: int = Field(64, ge=2, description="Global batch (all processes together) per optimiser step.")
    accumulate: int = Field(1, ge=1, description="Gradient accumulation: micro-batches of batch_size / accumulate per step (contrastive negatives come from the micro-batch).")
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.1, ge=0.0)
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps before the cosine decay.")
    max_logit_scale: float = Field(100.0, gt=1.0, description="Upper bound of the learnable inverse temperature (CLIP clamps at 100).")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="'auto': bf16 autocast on GPU, fp32 on CPU.")
    threads: int | None = operational(None, ge=1, description="CPU threads per training process; None: the CPUs this process may use (affinity, cgroup quota, OMP_NUM_THREADS; synthvlp.threads).")
    workers: int = operational(0, ge=0, description="DataLoader worker processes per training process (0 decodes in the training process).")
    checkpoint_every: int = operational(100, ge=1, description="Write a resumable training state every this many steps (and at the end).")
    keep_checkpoints: int = operational(2, ge=1, description="Resumable states kept on disk (newest first).")
    image_encoder: Path | None = Field(None, description="Initialise the image tower from this encoder checkpoint (e.g. RaSD-pretrained; see synthvlp.models.save_image_encoder).")
    tensorboard: bool = operational(True, description="Also write TensorBoard event files under pretrain/tensorboard.")

    @field_validator("objective")
    @classmethod
    def _registered(cls, value: str) -> str:
        return OBJECTIVES.check(value)

    @model_validator(mode="after")
    def _consistent(self) -> PretrainSection:
        if self.recipe in ("real", "mixed") and self.real is None:
            raise ValueError(f"recipe {self.recipe!r} needs pretrain.real (a CSV of image paths and report texts)")
        if self.batch_size % self.accumulate:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of accumulate ({self.accumulate})")
        return self


class RenderDataSection(Section):
    """Real image-report pairs a diffusion renderer trains on: WebDataset shards, a CSV, or both.

    A label-only set (NIH ChestX-ray14) has no reports: run its recipe (configs/recipes/real-nih.yaml), whose
    report writer captions each film, and train on that run's ``dataset/train-*.tar``.
    """

    shards: list[str] = Field(default_factory=list, description="WebDataset shards (<key>.png + <key>.txt), glob patterns allowed, e.g. runs/real-nih/dataset/train-*.tar.")
    real: RealDataSection | None = Field(None, description="A CSV of image paths and report texts (MIMIC-CXR layout), as pretrain.real reads it.")
    text: Literal["impression", "report"] = Field(
        "impression", description="'impression': condition on the IMPRESSION section when the text has one (SynCXR/RoentGen; what images.backend diffusers renders from); 'report': the whole text.")
    plan: bool = Field(
        False, description="Also condition on the entity plan: its present and uncertain findings, sorted, before the text ('PLAN: cardiomegaly; left pleural effusion. ...'). "
        "Shards give each sample's planned entities (<key>.json), a CSV what the entity extractor reads in its report; the images stage builds the same caption from each sample's plan.")

    @model_validator(mode="after")
    def _has_data(self) -> RenderDataSection:
        if not self.shards and self.real is None:
            raise ValueError("no training data: set data.shards (a run's dataset/train-*.tar) or data.real (a CSV)")
        return self


RENDER_ARCHITECTURE = ("channels", "attention", "layers_per_block", "head_dim", "groups", "text_encoder", "text_width", "text_layers",
                       "text_heads", "max_tokens", "vocab_min_count", "prediction", "train_timesteps", "beta_schedule")
"""The settings of a renderer built from scratch, which ``model.init_from`` takes from its folder instead."""


class RenderModelSection(Section):
    """A text-conditioned UNet (in pixel space, one grayscale channel, or in a VAE's latent space) and its text
    encoder: built from these settings, or a local Stable Diffusion folder to fine-tune (``init_from``)."""

    size: int = Field(64, ge=16, le=1024, description="Film side in pixels the renderer trains and renders at (set images.size to it).")
    init_from: Path | None = Field(
        None, description="Fine-tune a local Stable Diffusion folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/; SD v1.x layout, "
        "e.g. RoentGen's): its UNet trains on the films' VAE latents with its own noise schedule, its VAE stays frozen, its text encoder trains unless "
        "train_text_encoder: false (RoentGen's recipe). The settings of a built model (channels ... beta_schedule, text_encoder) then come from the folder "
        "and must stay unset. A pixel-space folder synthvlp render train wrote (no vae/) fine-tunes in pixel space.")
    vae: Path | None = Field(
        None, description="A local AutoencoderKL folder (config.json and weights, or a Stable Diffusion folder with vae/), frozen: the UNet denoises its "
        "latents (scaled by its scaling_factor) instead of pixels. With init_from it replaces the folder's vae/ (e.g. a fine-tuned SD VAE with the same latent space).")
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1, description="UNet width per resolution level; each level after the first halves the resolution.")
    attention: list[bool] = Field(default_factory=lambda: [False, True, True], min_length=1, description="Per level: cross-attention to the text (True) or plain ResNet blocks.")
    layers_per_block: int = Field(1, ge=1, description="ResNet layers per UNet block.")
    head_dim: int = Field(8, ge=1, description="Attention head width.")
    groups: int = Field(8, ge=1, description="GroupNorm groups; must divide every channel count.")
    text_encoder: Path | None = Field(
        None, description="A synthvlp CLIP checkpoint (a run's pretrain/checkpoint.pt: its open_clip text tower and tokenizer, converted to a CLIPTextModel, frozen), "
        "or a local HF folder with a CLIP text model and its tokenizer (or a Stable Diffusion folder with text_encoder/ and tokenizer/); None builds a small word-level one from the training captions.")
    train_text_encoder: bool = Field(True, description="Train an HF folder's or init_from's text encoder with the UNet (a built one always is, a CLIP checkpoint's never).")
    text_width: int = Field(64, ge=8, description="Built text encoder: hidden size.")
    text_layers: int = Field(2, ge=1, description="Built text encoder: transformer layers.")
    text_heads: int = Field(4, ge=1, description="Built text encoder: attention heads.")
    max_tokens: int = Field(48, ge=4, description="Built text encoder: tokens read per caption (longer ones are cut).")
    vocab_min_count: int = Field(1, ge=1, description="Built tokenizer: words seen fewer times in the captions become [UNK].")
    prediction: Literal["epsilon", "v_prediction"] = Field("v_prediction", description="What the UNet predicts: the noise, or v (steadier for pixel-space models at few steps).")
    train_timesteps: int = Field(1000, ge=10, description="Noise levels of the training schedule.")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = Field("squaredcos_cap_v2", description="Noise schedule ('squaredcos_cap_v2': the cosine schedule, suited to pixel space).")

    @model_validator(mode="after")
    def _consistent(self) -> RenderModelSection:
        if self.init_from is not None:
            fields = type(self).model_fields
            changed = [name for name in RENDER_ARCHITECTURE if getattr(self, name) != fields[name].get_default(call_default_factory=True)]
            if changed:
                raise ValueError(f"init_from takes the UNet, text encoder and noise schedule from {self.init_from}; leave {', '.join(changed)} unset")
        if len(self.attention) != len(self.channels):
            raise ValueError(f"attention has {len(self.attention)} entries but channels has {len(self.channels)}; give one per level")
        if self.size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"size {self.size} is not divisible by 2^{len(self.channels) - 1}, the UNet's downsampling")
        if any(c % self.groups or c % self.head_dim for c in self.channels):
            raise ValueError(f"every channel count {self.channels} must be divisible by groups ({self.groups}) and head_dim ({self.head_dim})")
        if self.text_width % self.text_heads:
            raise ValueError(f"text_width ({self.text_width}) must be divisible by text_heads ({self.text_heads})")
        return self


class RenderTrainSection(Section):
    """The training loop: steps, batch, optimiser, EMA, caption dropout and checkpoints."""

    out_dir: Path = operational(Path("runs/renderer"), description="Training folder: pipeline/ (what images.diffusers.path loads), state/, log.csv, samples/.")
    seed: int = Field(0, ge=0, description="Seeds the weights, the data order, noise and caption dropout.")
    steps: int = Field(2000, ge=1, description="Optimiser steps.")
    batch_size: int = Field(16, ge=1, description="Global batch per step; under torchrun each of N processes takes batch_size / N of it.")
    lr: float = Field(2e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps before the cosine decay.")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Clip the gradient norm to this (None: no clipping).")
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="Largest EMA decay; the EMA weights are the ones saved (warm-up: 1 - (1 + step)^-3/4, capped here).")
    caption_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Share of captions replaced by '' so one model learns the unconditional score classifier-free guidance needs.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast: 'auto' is bf16 on GPU and fp32 on CPU; 'bf16' also runs on CPU; 'fp16' (with a gradient scaler) needs a GPU. Weights stay fp32.")
    threads: int | None = operational(None, ge=1, description="CPU threads (None: what this process may use; synthvlp.threads).")
    checkpoint_every: int = operational(200, ge=1, description="Write a resumable state, export pipeline/ and draw samples every this many steps (and at the end).")
    keep_checkpoints: int = operational(2, ge=1, description="Resumable states kept on disk (newest first).")
    sample_prompts: list[str] = operational(
        default_factory=lambda: ["No acute cardiopulmonary process.", "Pneumonia.", "Cardiomegaly.", "Pleural effusion."],
        description="Captions drawn at each checkpoint into samples/step-N.png (empty: none).")
    sample_steps: int = operational(25, ge=1, description="DDIM steps of those samples.")
    sample_guidance: float = operational(2.0, ge=0.0, description="Classifier-free guidance scale of those samples.")


class RenderTrainConfig(Section):
    """``synthvlp render train``: a text-to-image diffusion renderer trained on real image-report pairs."""

    data: RenderDataSection
    model: RenderModelSection = Field(default_factory=RenderModelSection)
    train: RenderTrainSection = Field(default_factory=RenderTrainSection)


POSITIVE_PROMPTS: tuple[str, ...] = ("There is {name}.", "Findings consistent with {name}.", "{name} is present.")
NEGATIVE_PROMPTS: tuple[str, ...] = ("There is no {name}.", "No evidence of {name}.", "No {name}.")
"""Default zero-shot prompt ensembles (CheXzero's positive/negative pair, a few phrasings each)."""


SYNTHETIC_TEST, REAL_TEST = "synthetic-test", "real-test"
"""Titles of the run's own held-out split in evaluate/ and the tables (real-test when plan.labels plans real films)."""


def plain_name(name: str, field: str) -> str:
    """``name`` if it can name a file or folder inside another (no separator, not '.' or '..', no leading dot);
    otherwise a ValueError, so a value from a config or table never writes outside its folder."""
    if not name or name.strip() != name or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise ValueError(f"{field} {name!r} must be a plain name (no '/', '\\', leading '.' or surrounding spaces): it names a folder")
    return name


class BenchmarkSpec(Section):
    """One real benchmark to evaluate on, read by its adapter (``synthvlp.evaluation.benchmarks``)."""

    name: str = Field(..., description="Adapter name: chexpert, chexpert-5x200, nih, rsna, siim, covidx, padchest, ms-cxr, vindr, generic, shards.")
    path: Path = Field(..., description="The benchmark's folder or label file, as published; relative paths are from the CWD.")
    images: Path | None = Field(None, description="The benchmark's image folder, when it is not beside the label file (the adapter's images option).")
    options: dict[str, Any] = Field(default_factory=dict, description="Further options of the adapter, e.g. {include_no_finding: true}; `synthvlp evaluate --help` lists each adapter's.")
    split: str | None = Field(None, description="Evaluate only this split of the benchmark (None: every image).")
    optional: bool = Field(False, description="Skip with a note, instead of failing, when the path is absent.")
    title: str | None = Field(None, description="Name in the tables and of its folder under evaluate/; defaults to the adapter name.")
    linear_probe: bool = Field(False, description="Also fit a linear probe on the benchmark's train split and score its test split (at evaluate.finetune_fractions).")

    def adapter_options(self) -> dict[str, Any]:
        """The keyword options for ``load_benchmark``: ``images`` (when set) and ``options``."""
        return {**self.options, **({"images": self.images} if self.images is not None else {})}
    @property
    def folder_name(self) -> str:
        """The title, which names the results folder ``evaluate/<title>/``."""
        return self.title or self.name

    @model_validator(mode="after")
    def _title_is_a_folder_name(self) -> BenchmarkSpec:
        plain_name(self.folder_name, "title" if self.title else "name")
        return self


class EvaluateSection(Section):
    """Zero-shot evaluation on the held-out synthetic split, plus any real benchmarks listed."""

    classes: list[str] | None = Field(None, description="Findings to score; None means plan.findings.")
    bootstrap: int = Field(200, ge=0, description="Bootstrap resamples for 95% confidence intervals (0 disables).")
    min_positives: int = Field(10, ge=1, description="Classes with fewer positive (or negative) images are scored but left out of a set's mean AUC (too few to say anything).")
    floor: bool = Field(True, description="Also score a randomly initialised model of the same architecture with the same prompts: the floor every figure is read against.")
    positive_prompts: list[str] = Field(default_factory=lambda: list(POSITIVE_PROMPTS), min_length=1,
                                        description="Prompt ensemble for 'class present'; {name} is the class.")
    negative_prompts: list[str] = Field(default_factory=lambda: list(NEGATIVE_PROMPTS), min_length=1,
                                        description="Prompt ensemble for 'class absent'; {name} is the class.")
    benchmarks: list[BenchmarkSpec] = Field(default_factory=list, description="Real benchmarks evaluated beside the synthetic test split.")
    grounding: bool = Field(True, description="Score zero-shot grounding wherever a set has regions: phantom masks on the synthetic split, boxes or masks on real benchmarks.")
    grounding_map: Literal["similarity", "contribution"] = Field(
        "contribution", description="'similarity': cosine of each location embedding with the text (BioViL); 'contribution': their dot product, each location's share of the image-text score for mean-pooled towers (CAM).")
    overlays: int = Field(8, ge=0, description="Grounding heat-map overlays drawn per benchmark.")
    finetune_fractions: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0], min_length=1, description="Label fractions of the linear probe (1%, 10%, 100%).")
    finetune_seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1, description="Seeds of the probe's training subsets; tables give a 95% t-interval over them.")

    @field_validator("benchmarks")
    @classmethod
    def _titles_unique(cls, benchmarks: list[BenchmarkSpec]) -> list[BenchmarkSpec]:
        titles = [b.folder_name for b in benchmarks] + [SYNTHETIC_TEST, REAL_TEST]
        repeated = sorted({t for t in titles if titles.count(t) > 1})
        if repeated:
            raise ValueError(f"benchmark titles {repeated} are used twice (or clash with {SYNTHETIC_TEST!r} or {REAL_TEST!r}, the run's own test split); "
                             "give each a distinct title")
        return benchmarks

    @field_validator("positive_prompts", "negative_prompts")
    @classmethod
    def _has_name(cls, prompts: list[str]) -> list[str]:
        for prompt in prompts:
            if "{name}" not in prompt:
                raise ValueError(f"prompt {prompt!r} has no {{name}} placeholder for the class")
        return prompts


class RunConfig(Section):
    """A whole run: every stage's settings."""

    run: RunSection = Field(default_factory=RunSection)
    plan: PlanSection = Field(default_factory=PlanSection)
    reports: ReportsSection = Field(default_factory=ReportsSection)
    images: ImagesSection = Field(default_factory=ImagesSection)
    filter: FilterSection = Field(default_factory=FilterSection)
    balance: BalanceSection = Field(default_factory=BalanceSection)
    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)

    @model_validator(mode="after")
    def _renderer_has_its_settings(self) -> RunConfig:
        """What the chosen renderer needs from the rest of the config (its ``check``), when the config is loaded."""
        RENDERERS.load(self.images.backend).check(self)
        return self

    def to_plain(self) -> dict[str, Any]:
        """JSON-compatible dict (paths as strings), the form written to a run folder."""
        return self.model_dump(mode="json")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: malformed YAML: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected UTF-8 YAML)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


EXTENDS = "extends"
"""Top-level key naming a config file (relative to this one) whose settings this file starts from."""


def _read_config_file(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``_read_yaml`` plus ``extends``: the named base is read first and this file's sections are merged over it
    (mappings key by key, any other value replaced), so a family of configs states what they share once."""
    data = _read_yaml(path)
    base = data.pop(EXTENDS, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: {EXTENDS} must be a path to another config file, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in chain or base_path == path.resolve():
        raise ConfigError(f"{path}: {EXTENDS} {base!r} leads back to a file that extends it")
    return _merge(_read_config_file(base_path, (*chain, path.resolve())), data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in ``data``; the value is parsed as YAML, so ``x=3`` is an int and ``x=[a,b]`` a list."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"command line: override {override!r} is not of the form key.path=value")
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"command line: cannot set {key!r}: {prefix} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(error: dict[str, Any], model: type[BaseModel]) -> str:
    """One line per pydantic error: dotted path, offending value, what was expected."""
    path = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, error["loc"][:-1])
        return f"{path}: unknown key; expected one of: {', '.join(allowed)}"
    value = error.get("input")
    shown = repr(value) if not isinstance(value, dict) else "{...}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{path} = {shown}: {message}"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        current = field.annotation
    return sorted(current.model_fields)


def load_config(path: Path | str | None, overrides: list[str] | tuple[str, ...] = (), model: type[T] = RunConfig) -> T:
    """Read, override and validate a run config (or another ``model``, e.g. a RaSD config); ``path=None``
    starts from the embedded defaults."""
    source = str(path) if path is not None else "defaults"
    data = _read_config_file(Path(path)) if path is not None else {}
    for override in overrides:
        apply_override(data, override)
    if overrides:
        source += " (with command-line overrides)"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(err, model) for err in exc.errors()]
        raise ConfigError(f"{source}: invalid config:\n  " + "\n  ".join(lines)) from None


def output_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``diff_configs`` of two plain run configs without their ``incidental`` settings: the differences that
    change outputs."""
    paths = marked(RunConfig, INCIDENTAL)
    return diff_configs(_without(old, paths), _without(new, paths))


def diff_configs(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths whose values differ between two plain configs, as ``path: old -> new`` lines."""
    lines: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines.extend(diff_configs(a, b, prefix=f"{path}."))
        elif a != b:
            lines.append(f"{path}: {a!r} -> {b!r}")
    return lines


def dump_yaml(config: RunConfig) -> str:
    """The resolved config as YAML, in field order, for ``config show`` and the run folder."""
    return yaml.safe_dump(config.to_plain(), sort_keys=False)
