"""How far rendered films are from real ones: a discriminator, distribution distances and a side-by-side sheet.

``measure`` compares a set of rendered films with real films at the same size. Each distance is reported beside
the same distance between two halves of the real set (both averaged over random halvings), so "2x real-vs-real"
reads directly off the table; the
discriminator's held-out AUC is given per seed, with its mean and standard deviation, beside two linear probes that
stay graded where the CNN saturates (``probes``: layout alone, intensity alone). ``synthvlp render realism`` runs
it on a run folder and writes the table, the figures as JSON, a contact sheet and the probes' block map.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from synthvlp.generation.realism.discriminator import Protocol, discriminator_auc
from synthvlp.generation.realism.distances import NAMES, between, features
from synthvlp.generation.realism.films import Films, load_real, load_rendered
from synthvlp.generation.realism.probes import Probes, cell_map, probe
from synthvlp.generation.realism.sheet import interleaved_sheet

__all__ = ["Films", "Probes", "Protocol", "Realism", "cell_map", "interleaved_sheet", "load_real", "load_rendered", "measure"]


HALVINGS = 10
"""Random halvings of the real set each distance is averaged over (one halving can land far from the typical)."""


@dataclass
class Realism:
    """Figures of one comparison; ``distances[name] = (rendered vs real half A, real half B vs real half A)``,
    each a mean over halvings of the real set."""

    size: int
    n_real: int
    n_rendered: int
    auc: list[float]
    distances: dict[str, tuple[float, float]]
    probes: Probes
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
            f"| layout probe AUC (linear, block means per film standardised) | {self.probes.layout:.3f} | 0.5 | - |",
            f"| intensity probe AUC (linear, global histogram) | {self.probes.intensity:.3f} | 0.5 | - |",
        ]
        for name, (ours, floor) in self.distances.items():
            lines.append(f"| {name} distance | {ours:.4f} | {floor:.4f} | {ours / max(floor, 1e-12):.1f}x |")
        lines.append("")
        lines.append("Discriminator AUC per seed: " + ", ".join(f"{a:.3f}" for a in self.auc) + f". Distances: mean over {HALVINGS} random halvings of the real set.")
        return "\n".join(lines) + "\n"


def measure(real: Films, rendered: Films, protocol: Protocol = Protocol(), halvings: int = HALVINGS) -> Realism:
    """Compare ``rendered`` with ``real`` (same film size). Each distance is the mean over ``halvings`` random
    halvings of the real set: real half A against as many rendered films, and against real half B."""
    if real.images.shape[1:] != rendered.images.shape[1:]:
        raise ValueError(f"films differ in size: real {real.images.shape[1:]}, rendered {rendered.images.shape[1:]}")
    ours, theirs = features(rendered.images), features(real.images)
    half = len(real.images) // 2
    n = min(half, len(rendered.images))
    rng = np.random.default_rng(0)
    sums = {name: [0.0, 0.0] for name in NAMES}
    for _ in range(halvings):
        order = rng.permutation(len(real.images))
        a, b = order[:n], order[half : half + n]
        pick = rng.permutation(len(rendered.images))[:n]
        for name, value in between(ours, theirs, pick, a).items():
            sums[name][0] += value / halvings
        for name, value in between(theirs, theirs, b, a).items():
            sums[name][1] += value / halvings
    auc = discriminator_auc(real, rendered, protocol)
    distances = {name: (ours_, floor) for name, (ours_, floor) in sums.items()}
    return Realism(real.images.shape[1], len(real.images), len(rendered.images), auc, distances, probe(real, rendered), asdict(protocol))
