"""Reading a user's CSV (benchmark label files, ``pretrain.real``, real corpora for filtering and segmentation).

Every such CSV goes through ``read_csv_table``, so each way a file can be wrong gets one message naming the file
and, where there is one, the line: missing, a folder, empty, a header without rows, an unterminated quote or
another tokenising error, text that is not UTF-8, and required columns that are absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from synthvlp.errors import UserError


def read_csv_table(path: Path, what: str, required: Sequence[str] = (), **options: object) -> pd.DataFrame:
    """``pd.read_csv(path, **options)`` with at least one row and the ``required`` columns, or a ``UserError``.

    ``what`` names the file's role in messages ("label file", "pretrain.real.csv").
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; {what} must be a CSV file")
    try:
        frame = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty {what}; expected a header row and at least one data row") from None
    except pd.errors.ParserError as exc:
        detail = str(exc).removeprefix("Error tokenizing data. C error: ").strip()
        raise UserError(f"{path}: malformed CSV ({detail}); check for an unterminated quote or a row with extra fields") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: line {_bad_line(path)} is not UTF-8 text ({exc.reason}); save the {what} as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    absent = [c for c in required if c not in frame.columns]
    if absent:
        raise UserError(f"{path}: missing column(s) {absent}; expected columns {list(required)} (found {list(frame.columns)})")
    if frame.empty:
        raise UserError(f"{path}: {what} has a header ({', '.join(map(str, frame.columns))}) but no rows")
    return frame


def _bad_line(path: Path) -> int:
    """1-based number of the first line that is not valid UTF-8."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0
