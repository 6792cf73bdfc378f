"""The output's columns in jobs/schema.py: the one list the job, the current view, config and Glue derive from."""

import pandas as pd
import pyarrow as pa
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from jobs.config import RESERVED_COLUMNS
from jobs.schema import RESULT_TYPE, ResultRow, nullable, output_columns, output_schema

# The Glue table's columns for conf/emr.yaml's shape (one head, embedding on), as Terraform declared
# them before they came from jobs/schema.py, plus phash (issue 18): older outputs lack only that one
# (Parquet columns are read by name, so it reads as null there).
GLUE_COLUMNS = [
    ("image_id", "string"),
    ("url", "string"),
    ("status", "string"),
    ("error", "string"),
    ("tags", "array<struct<label:string,score:float>>"),
    ("category", "string"),
    ("category_score", "float"),
    ("embedding", "array<float>"),
    ("embedding_norm", "float"),
    ("phash", "bigint"),
    ("path", "string"),
    ("model_name", "string"),
    ("model_version", "string"),
    ("models", "map<string,string>"),
    ("processed_at", "timestamp"),
    ("run_id", "string"),
]


def test_the_result_row_is_the_udf_result_type_field_for_field():
    assert ResultRow._fields == tuple(RESULT_TYPE.fieldNames())
    row = ResultRow("ok", embedding_norm=2.5, head_labels=["dress"])
    unset = dict.fromkeys(RESULT_TYPE.fieldNames())
    assert dict(zip(RESULT_TYPE.fieldNames(), row, strict=True)) == unset | {
        "status": "ok",
        "embedding_norm": 2.5,
        "head_labels": ["dress"],
    }
    # A batch of rows as the UDF hands it to Arrow: every field converts to its RESULT_TYPE type.
    rows = [row._replace(tag_labels=["a"], tag_scores=[0.5], embedding=[0.6, 0.8]), ResultRow("error", error="fetch: 404")]
    table = pa.Table.from_pandas(pd.DataFrame(rows, columns=ResultRow._fields), schema=to_arrow_schema(RESULT_TYPE))
    assert table.column("embedding_norm").to_pylist() == [2.5, None] and table.column("error").to_pylist() == [None, "fetch: 404"]


def test_output_columns_are_the_glue_tables():
    assert output_columns(["category"], embedding=True) == GLUE_COLUMNS


def names(columns: list[tuple[str, str]]) -> list[str]:
    return [name for name, _type in columns]


def test_heads_then_the_embedding_come_in_one_run_in_profile_order():
    fixed = output_columns([], embedding=False)
    both = output_columns(["style", "category"], embedding=True)
    start = names(both).index("style")
    added = [("style", "string"), ("style_score", "float"), ("category", "string"), ("category_score", "float")]
    assert both[start : start + 6] == [*added, ("embedding", "array<float>"), ("embedding_norm", "float")]
    assert both[:start] + both[start + 6 :] == fixed  # the fixed columns keep their order around them
    assert output_columns(["style", "category"], embedding=False) == both[: start + 4] + both[start + 6 :]
    assert [(f.name, f.dataType.simpleString()) for f in output_schema([], embedding=False).fields] == fixed


def test_reserved_columns_are_every_output_column_but_the_heads():
    assert RESERVED_COLUMNS == set(names(output_columns(["category"], embedding=True))) - {"category", "category_score"}
    assert {"image_id", "tags", "embedding", "path", "run_id"} <= RESERVED_COLUMNS


def test_nullable_allows_nulls_at_every_level_and_keeps_the_type():
    strict = output_schema(["category"], embedding=True)
    relaxed = nullable(strict)
    assert relaxed.simpleString() == strict.simpleString()
    tags, models = relaxed["tags"].dataType, relaxed["models"].dataType
    assert all(f.nullable for f in relaxed.fields) and not strict["path"].nullable
    assert tags.containsNull and all(f.nullable for f in tags.elementType.fields)
    assert isinstance(models, T.MapType) and models.valueContainsNull
