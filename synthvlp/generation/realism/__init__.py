"""How far rendered films are from real ones: a discriminator, distribution distances and a side-by-side sheet.

``measure`` compares a set of rendered films with real films at the same size. Each distance is reported beside
the same distance between two halves of the real set, so "2x real-vs-real" reads directly off the table; the
discriminator's held-out AUC is given per seed, with its mean and standard deviation. ``synthvlp render realism``
runs it on a run folder and writes the table, the figures as JSON and a contact sheet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from synthvlp.generation.realism.discriminator import Protocol, discriminator_auc
from synthvlp.generation.realism.distances import DISTANCES
from synthvlp.generation.realism.films import Films, load_real, load_rendered
from synthvlp.generation.realism.sheet import interleaved_sheet

__all__ = ["Films", "Protocol", "Realism", "interleaved_sheet", "load_real", "load_rendered", "measure"]


@dataclass
class Realism:
    """Figures of one comparison; ``distances[name] = (rendered vs real half A, real half B vs real half A)``."""

    size: int
    n_real: int
    n_rendered: int
    auc: list[float]
    distances: dict[str, tuple[float, float]]
    protocol: dict = field(default_factory=dict)

    @property
    def auc_mean(self) -> float:
        return float(np.mean(self.auc))

    @property
    def auc_sd(self) -> float:
        return float(np.std(self.auc, ddof=1)) if len(self.auc) > 1 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "auc_mean": self.auc_mean, "auc_sd": self.auc_sd}

    def table(self) -> str:
        """Markdown table: discriminator AUC, then each distance beside real-vs-real and their ratio."""
        lines = [
            f"Films: {self.n_rendered} rendered, {self.n_real} real, compared at {self.size} px.",
            "",
            "| measure | rendered vs real | real vs real | ratio |",
            "|---|---:|---:|---:|",
            f"| discriminator AUC (mean ± sd over {len(self.auc)} seeds) | {self.auc_mean:.3f} ± {self.auc_sd:.3f} | 0.5 | - |",
        ]
        for name, (ours, floor) in self.distances.items():
            lines.append(f"| {name} distance | {ours:.4f} | {floor:.4f} | {ours / max(floor, 1e-12):.1f}x |")
        lines.append("")
        lines.append("Discriminator AUC per seed: " + ", ".join(f"{a:.3f}" for a in self.auc))
        return "\n".join(lines) + "\n"


def measure(real: Films, rendered: Films, protocol: Protocol = Protocol()) -> Realism:
    """Compare ``rendered`` with ``real`` (same film size). Distances use equal numbers of films on both sides:
    real half A against real half B, and real half A against as many rendered films."""
    if real.images.shape[1:] != rendered.images.shape[1:]:
        raise ValueError(f"films differ in size: real {real.images.shape[1:]}, rendered {rendered.images.shape[1:]}")
    order = np.random.default_rng(0).permutation(len(real.images))
    half = len(order) // 2
    real_a, real_b = real.images[order[:half]], real.images[order[half : 2 * half]]
    ours = rendered.images[:half]
    distances = {name: (fn(ours, real_a), fn(real_b, real_a)) for name, fn in DISTANCES.items()}
    auc = discriminator_auc(real, rendered, protocol)
    return Realism(real.images.shape[1], len(real.images), len(rendered.images), auc, distances, asdict(protocol))
