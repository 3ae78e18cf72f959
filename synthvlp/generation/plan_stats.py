"""How flat a plan is, against the real corpus it balances: counts per pool item, Gini and imbalance ratio.

The report shows both so a user can see the frequency caps at work: a real corpus is long-tailed (SynCXR's
motivation), the plan should be close to uniform over the same items.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from synthvlp.config import RunConfig
from synthvlp.entities import EntityExtractor
from synthvlp.entities.stats import long_tail
from synthvlp.errors import UserError
from synthvlp.generation.planner import PoolItem, pools


def planned_counts(config: RunConfig, plans: list[list[dict]]) -> Counter[str]:
    """Samples per pool item label ('pleural effusion', 'no pneumothorax', ...)."""
    labels = {item.label for pool in pools(config) for item in pool}
    counts: Counter[str] = Counter({label: 0 for label in labels})
    for entities in plans:
        counts.update(PoolItem(e["name"], e["assertion"]).label for e in entities)
    return counts


def source_counts(config: RunConfig, extractor: Callable[[], EntityExtractor], cache_dir: Path) -> Counter[str] | None:
    """Reports of ``plan.source_corpus`` stating each pool item (cached by corpus size, mtime and pool).

    ``extractor`` is called only when the counts are not cached: compiling the vocabulary takes seconds."""
    path = config.plan.source_corpus
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        raise UserError(f"plan.source_corpus: {path} not found; give an IU XML .tgz/folder, a .csv or a .parquet of reports, or null")
    labels = sorted({item.label for pool in pools(config) for item in pool})
    stat = path.stat()
    key = hashlib.sha256(json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, labels]).encode()).hexdigest()[:16]
    cache = cache_dir / f"source-counts-{key}.json"
    if cache.exists():
        return Counter(json.loads(cache.read_text()))
    from synthvlp.entities.corpus import read_corpus
    from synthvlp.store import write_text_atomic

    counts: Counter[str] = Counter({label: 0 for label in labels})
    texts = [r.text for r in read_corpus(path)]
    for mentions in extractor().extract(texts):
        stated = {m.canonical if m.assertion == "present" else f"no {m.canonical}" for m in mentions if m.assertion != "uncertain"}
        counts.update(stated & set(labels))
    write_text_atomic(cache, json.dumps(dict(counts), sort_keys=True))
    return counts


def flatness(counts: Counter[str]) -> dict[str, float]:
    """Gini and imbalance ratio over the items that occur, plus how many pool items never occur."""
    summary = long_tail(list(counts.values()))
    summary["missing"] = sum(1 for v in counts.values() if v == 0)
    return summary
