"""Report corpora for entity statistics and benchmarks: IU X-ray XML (folder or tgz), CSV/Parquet tables with a
text column, and a run's manifest with findings/impression columns.

A broken item (malformed XML, unreadable bytes) becomes a Report with `error` set and empty text, so one bad file
is logged and counted instead of stopping the corpus. A corpus that cannot be read at all raises CorpusError.
"""

from __future__ import annotations

import logging
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from synthvlp.errors import UserError

log = logging.getLogger(__name__)
TEXT_COLUMNS = ("text", "report", "report_text", "findings_impression")
SECTION_COLUMNS = ("findings", "impression")
IU_SECTIONS = ("FINDINGS", "IMPRESSION")


class CorpusError(UserError, ValueError):
    """A corpus path or table that cannot be read; the message names the file and what is missing."""


@dataclass
class Report:
    """One report's text; `mesh` holds IU's MeSH major headings when the source has them."""

    id: str
    text: str
    mesh: list[str] = field(default_factory=list)
    error: str | None = None


def read_corpus(path: str | Path, text_column: str | None = None) -> Iterator[Report]:
    """Yield reports from an IU folder/tgz of XML, a .csv/.csv.gz/.parquet table, or a run manifest."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    name = path.name.lower()
    if path.is_dir():
        files = sorted(path.rglob("*.xml"), key=_natural)
        if not files:
            raise CorpusError(f"{path}: folder holds no .xml reports (expected IU X-ray ecgen-radiology/*.xml)")
        for f in files:
            yield _iu_report(f.stem, lambda f=f: f.read_bytes())
    elif name.endswith((".tgz", ".tar.gz", ".tar")):
        yield from _iu_tar(path)
    elif name.endswith((".csv", ".csv.gz", ".parquet", ".pq")):
        yield from _table(path, text_column)
    elif name.endswith(".xml"):
        yield _iu_report(path.stem, path.read_bytes)
    else:
        raise CorpusError(f"{path}: unknown corpus type; give an IU XML folder or .tgz, a .csv or .parquet table")


def _iu_tar(path: Path) -> Iterator[Report]:
    try:
        tar = tarfile.open(path)
    except (tarfile.TarError, OSError) as exc:
        raise CorpusError(f"{path}: cannot open archive ({exc})") from exc
    with tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")),
                         key=lambda m: _natural(Path(m.name)))
        if not members:
            raise CorpusError(f"{path}: archive holds no .xml reports")
        for m in members:
            yield _iu_report(Path(m.name).stem, lambda m=m: tar.extractfile(m).read())  # type: ignore[union-attr]


def _iu_report(rid: str, read: object) -> Report:
    try:
        root = ET.fromstring(read())  # type: ignore[operator]
    except (ET.ParseError, OSError) as exc:
        log.warning("report %s: malformed XML (%s); counted as an error", rid, exc)
        return Report(rid, "", error=f"malformed XML: {exc}")
    parts = [(a.text or "").strip() for a in root.iter("AbstractText") if a.get("Label") in IU_SECTIONS]
    mesh = [(m.text or "").strip() for m in root.iter("major")]
    return Report(rid, "\n\n".join(p for p in parts if p), mesh)


def _table(path: Path, text_column: str | None) -> Iterator[Report]:
    import pandas as pd

    try:
        df = pd.read_parquet(path) if path.name.lower().endswith((".parquet", ".pq")) else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types; all mean "unreadable table"
        raise CorpusError(f"{path}: cannot read table ({type(exc).__name__}: {exc})") from exc
    columns = [text_column] if text_column else [c for c in TEXT_COLUMNS if c in df.columns]
    sections = [c for c in SECTION_COLUMNS if c in df.columns]
    if text_column and text_column not in df.columns:
        raise CorpusError(f"{path}: no column {text_column!r}; columns are {list(df.columns)}")
    if not columns and not sections:
        raise CorpusError(f"{path}: no text column; expected one of {TEXT_COLUMNS} or {SECTION_COLUMNS}, "
                          f"found {list(df.columns)} (pass text_column=...)")
    use = columns[:1] or sections
    ids = df["id"].astype(str) if "id" in df.columns else df.index.astype(str)
    for rid, *values in zip(ids, *(df[c] for c in use)):
        texts = [v for v in values if isinstance(v, str) and v.strip()]
        yield Report(rid, "\n\n".join(texts))


def _natural(p: Path) -> tuple[int, str]:
    """IU files are numbered; sort 2.xml before 10.xml."""
    return (int(p.stem), "") if p.stem.isdigit() else (1 << 62, p.stem)
