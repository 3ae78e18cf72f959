"""The benchmark registry: ``load_benchmark("nih", path)`` returns a ``LabelledSet`` for any adapter.

Each adapter is a module with a ``load(path, **options)`` that reads the files as the benchmark publishes them.
CheXpert 5x200 is drawn from the CheXpert train CSV (``build_chexpert_5x200``), so it is registered too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from synthvlp.errors import UserError
from synthvlp.evaluation.benchmarks import (chexpert, covidx, generic, mscxr, nih, padchest, rsna, shards, siim,
                                            vindr)
from synthvlp.evaluation.benchmarks.base import LabelledSet, Region
from synthvlp.evaluation.benchmarks.chexpert import build_chexpert_5x200


def _chexpert_5x200(path: Path | list[Path], **options: object) -> LabelledSet:
    """CheXpert 5x200 drawn from the train CSV at ``path`` (options: seed, per_class, frontal_only, root)."""
    return build_chexpert_5x200(Path(path[0] if isinstance(path, list) else path), **options)


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
"""Benchmark name -> loader taking (path or paths, **options)."""


def benchmark_names() -> list[str]:
    """The registered benchmark names, sorted."""
    return sorted(BENCHMARKS)


def load_benchmark(name: str, path: Path | list[Path], **options: object) -> LabelledSet:
    """The ``LabelledSet`` of benchmark ``name`` read from ``path``; an unknown name lists the known ones."""
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; known: {', '.join(benchmark_names())}")
    try:
        return BENCHMARKS[name](path, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise UserError(f"benchmark {name!r}: {exc}") from exc
        raise


__all__ = ["BENCHMARKS", "LabelledSet", "Region", "benchmark_names", "build_chexpert_5x200", "load_benchmark"]