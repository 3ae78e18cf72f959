"""The benchmark registry: ``load_benchmark("nih", path)`` returns a ``LabelledSet`` for any adapter.

Each adapter is a module with a ``load(path, **options)`` that reads the files as the benchmark publishes them;
its keyword parameters (``images``, the image folder when it is not beside the label file; ``split``; ...) are
the options it declares, which ``synthvlp evaluate --images/--option`` and ``evaluate.benchmarks`` pass through.
CheXpert 5x200 is drawn from the CheXpert train CSV (``build_chexpert_5x200``), so it is registered too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks import (chexpert, covidx, generic, mscxr, nih, padchest, rsna, shards, siim,
                                            vindr)
from synthvlp.evaluation.benchmarks.base import LabelledSet, Region
from synthvlp.evaluation.benchmarks.chexpert import build_chexpert_5x200


def _chexpert_5x200(path: Path | list[Path], seed: int = 0, per_class: int = 200, frontal_only: bool = True,
                    images: Path | None = None) -> LabelledSet:
    """CheXpert 5x200 drawn from the train CSV at ``path``."""
    return build_chexpert_5x200(Path(path[0] if isinstance(path, list) else path), seed=seed, per_class=per_class,
                                frontal_only=frontal_only, images=images)


BENCHMARKS: dict[str, Callable[..., LabelledSet]] = {
    "chexpert": chexpert.load,
    "chexpert-5x200": _chexpert_5x200,
    "covidx": covidx.load,
    "generic": generic.load,
    "ms-cxr": mscxr.load,
    "nih": nih.load,
    "padchest": padchest.load,
    "rsna": rsna.load,
    "shards": shards.load,
    "siim": siim.load,
    "vindr": vindr.load,
}
"""Benchmark name -> loader taking (path or paths, **options); its keyword parameters are the options it declares."""


def benchmark_names() -> list[str]:
    """The registered benchmark names, sorted."""
    return sorted(BENCHMARKS)


def _loader(name: str) -> Callable[..., LabelledSet]:
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; known: {', '.join(benchmark_names())}")
    return BENCHMARKS[name]


def adapter_options(name: str) -> dict[str, inspect.Parameter]:
    """The inputs and options adapter ``name`` declares besides its data path (e.g. ``images``, the image folder
    when it is not beside the label file), read from its loader's signature: one source of truth."""
    parameters = list(inspect.signature(_loader(name)).parameters.values())[1:]
    return {p.name: p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def describe_options() -> str:
    """One line per adapter: ``name: option=default, ...``, for help texts and errors."""
    lines = []
    for name in benchmark_names():
        shown = [f"{o.name}={o.default!r}" if o.default is not None else o.name for o in adapter_options(name).values()]
        lines.append(f"{name}: {', '.join(shown) or '-'}")
    return "; ".join(lines)


def load_benchmark(name: str, path: Path | list[Path], **options: object) -> LabelledSet:
    """The ``LabelledSet`` of benchmark ``name`` read from ``path``; an unknown name lists the known ones, an
    option the adapter does not declare lists the ones it does. Path options given as text become paths."""
    loader, declared = _loader(name), adapter_options(name)
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise UserError(f"benchmark {name!r} has no option {', '.join(unknown)}; its options: {', '.join(declared) or 'none'}")
    for key, value in options.items():
        if isinstance(value, str) and "Path" in str(declared[key].annotation):
            options[key] = Path(value)
    return loader(path, **options)


__all__ = ["BENCHMARKS", "LabelledSet", "Region", "adapter_options", "benchmark_names", "describe_options", "build_chexpert_5x200", "load_benchmark"]