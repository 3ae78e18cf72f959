"""Per-sample seeds that depend only on (run seed, sample id, purpose).

Deriving every random draw from these seeds, never from a shared stream, is what makes results independent of
sharding, batch size, worker count and of where a killed run resumed.
"""

import hashlib

import numpy as np


def sample_seed(run_seed: int, sample_id: str, purpose: str, attempt: int = 0) -> int:
    """A 63-bit seed for one sample and one purpose (``"plan"``, ``"image"``, ...); ``attempt`` varies retries."""
    digest = hashlib.blake2b(f"{run_seed}:{sample_id}:{purpose}:{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def sample_rng(run_seed: int, sample_id: str, purpose: str, attempt: int = 0) -> np.random.Generator:
    """A numpy generator owned by one sample and purpose."""
    return np.random.default_rng(sample_seed(run_seed, sample_id, purpose, attempt))


def sample_id(index: int) -> str:
    """The sample key: fixed width and dot-free, so WebDataset splits ``<key>.<ext>`` correctly."""
    return f"s{index:08d}"
