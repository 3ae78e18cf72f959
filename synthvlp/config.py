"""The run config: one typed model, loaded from YAML plus ``key.path=value`` overrides.

This module is the single source of truth for every setting a run has. Validation errors name the file (or
``command line``), the dotted key path, the offending value and what was expected, so the CLI can print them
without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synthvlp.errors import ConfigError

STAGES: tuple[str, ...] = ("plan", "reports", "images", "filter", "balance", "pretrain", "evaluate")
"""Stage names in run order; the runner owns what each one does."""


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class RunSection(Section):
    """Where the run lives, how big it is and the seed everything derives from."""

    name: str = Field("quickstart", min_length=1, description="Human-readable run name.")
    out_dir: Path = Field(Path("runs/quickstart"), description="Run folder; relative paths are from the CWD.")
    seed: int = Field(0, ge=0, description="Run seed; each sample's seed derives from (seed, sample id).")
    n_samples: int = Field(2000, ge=1, description="Number of synthetic image-report pairs to plan.")
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of samples held out for evaluation.")
    shard_size: int = Field(1000, ge=1, description="Samples per WebDataset shard (the unit of resuming).")


class PlanSection(Section):
    """Which entities a report may contain and how many abnormal findings each report gets."""

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
        description="Abnormal findings to sample from; each must be in the entity vocabulary.",
    )
    min_findings: int = Field(0, ge=0, description="Fewest abnormal findings in one report (0 allows normal reports).")
    max_findings: int = Field(2, ge=0, description="Most abnormal findings in one report.")

    @model_validator(mode="after")
    def _range_is_ordered(self) -> PlanSection:
        if self.min_findings > self.max_findings:
            raise ValueError(f"min_findings ({self.min_findings}) must not exceed max_findings ({self.max_findings})")
        if self.max_findings > len(self.findings):
            raise ValueError(f"max_findings ({self.max_findings}) exceeds the {len(self.findings)} findings listed")
        return self

    @field_validator("findings")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"findings are listed twice: {duplicates}")
        return value


class ReportsSection(Section):
    """How report text is written."""

    backend: Literal["template"] = Field("template", description="Report writer; 'template' needs no model.")


class ImagesSection(Section):
    """How images are rendered."""

    backend: Literal["procedural"] = Field("procedural", description="Image renderer; 'procedural' needs no weights.")
    size: int = Field(64, ge=16, le=4096, description="Square image side in pixels.")


class FilterSection(Section):
    """Thresholds of the quality checks; each sample records every check's score and verdict."""

    min_std: float = Field(0.02, ge=0.0, description="Reject images whose intensity std (0-1 scale) is below this.")
    max_saturated: float = Field(0.5, ge=0.0, le=1.0, description="Reject images with more clipped pixels than this share.")
    min_report_chars: int = Field(20, ge=0, description="Reject reports shorter than this many characters.")


class BalanceSection(Section):
    """Which accepted samples make the training set."""

    max_samples: int | None = Field(None, ge=1, description="Cap on exported samples per split (None keeps all).")


class PretrainSection(Section):
    """CLIP-style pre-training of an open_clip model on the exported shards."""

    model: str = Field("synthvlp-tiny", description="open_clip model config name (ours or open_clip's).")
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.1, ge=0.0)
    warmup_steps: int = Field(10, ge=0)
    threads: int = Field(2, ge=1, description="torch CPU threads.")


class EvaluateSection(Section):
    """Zero-shot evaluation on the held-out synthetic split."""

    classes: list[str] | None = Field(None, description="Findings to score; None means plan.findings.")
    bootstrap: int = Field(200, ge=0, description="Bootstrap resamples for 95% confidence intervals (0 disables).")


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


def load_config(path: Path | str | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read, override and validate a run config; ``path=None`` starts from the embedded defaults."""
    source = str(path) if path is not None else "defaults"
    data = _read_yaml(Path(path)) if path is not None else {}
    for override in overrides:
        apply_override(data, override)
    if overrides:
        source += " (with command-line overrides)"
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(err, RunConfig) for err in exc.errors()]
        raise ConfigError(f"{source}: invalid config:\n  " + "\n  ".join(lines)) from None


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
