import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthvlp import schema
from synthvlp.errors import UserError


def _table(**overrides):
    columns = {
        "id": ["s00000000", "s00000001"],
        "index": [0, 1],
        "split": ["train", "test"],
        "planned_entities": [[{"name": "nodule", "category": "ABNORMALITY", "assertion": "present", "laterality": "left"}], []],
        "filter_contrast_score": [0.2, 0.0],
        "filter_contrast_verdict": ["pass", "reject"],
    }
    columns.update(overrides)
    return pa.table(columns)


def test_conform_fills_missing_columns_and_writes(tmp_path):
    path = tmp_path / "manifest.parquet"
    schema.write_manifest(_table(), path)
    table = pq.read_table(path)
    assert table.column_names[: len(schema.COLUMNS)] == schema.COLUMNS.names
    assert table.column("findings").null_count == 2
    assert table.column_names[-2:] == ["filter_contrast_score", "filter_contrast_verdict"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"id": ["s1", "s1"]}, "sample id 's1' appears more than once"),
        ({"id": ["s.1", "s2"]}, "contains '.'"),
        ({"split": ["train", "val"]}, "row 1, column 'split': 'val'"),
        ({"filter_contrast_verdict": ["pass", "maybe"]}, "filter_contrast_verdict"),
        (
            {"planned_entities": [[{"name": "x", "category": "DISEASE", "assertion": "likely", "laterality": None}], []]},
            "assertion 'likely'",
        ),
    ],
)
def test_invalid_rows_are_named(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        schema.write_manifest(_table(**overrides), tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


def test_unknown_column_is_refused(tmp_path):
    with pytest.raises(UserError, match="unknown columns"):
        schema.validate(schema.conform(_table()).append_column("mystery", pa.array([1, 2])))
