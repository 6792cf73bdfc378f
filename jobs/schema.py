"""The output's columns in one place: their names, Spark types and order, and the tagging UDF's result row.

Everything that names an output column derives from here: the job's select (jobs/pipeline.py), the
UDF's rows (jobs/tagging.py), the names a head may not take (jobs/config.py), the current view
(jobs/current.py) and, through `output_columns`, the Glue table's columns. Adding a column is one
edit here plus the code that computes it.

Pure: Spark's types only, no session, nothing else of jobs/ (jobs/config.py imports it).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable

from pyspark.sql import types as T

# How a row's results were computed (its `path` column): fetched, decoded and run through the
# backbone, or heads applied to an embedding the output already held for the same backbone version.
PATH_FULL = "full"
PATH_STORED_EMBEDDING = "stored_embedding"

TAG_TYPE = T.StructType([T.StructField("label", T.StringType()), T.StructField("score", T.FloatType())])

# What the tagging UDF answers per image. jobs/pipeline.py spreads it into the output's columns: a
# field named like an output column becomes that column as it is.
RESULT_TYPE = T.StructType(
    [
        T.StructField("status", T.StringType()),
        T.StructField("error", T.StringType()),
        T.StructField("tag_labels", T.ArrayType(T.StringType())),  # best first
        T.StructField("tag_scores", T.ArrayType(T.FloatType())),
        T.StructField("embedding", T.ArrayType(T.FloatType())),
        T.StructField("embedding_norm", T.FloatType()),
        T.StructField("head_labels", T.ArrayType(T.StringType())),  # one per head, in the profile's order
        T.StructField("head_scores", T.ArrayType(T.FloatType())),
        T.StructField("phash", T.LongType()),
    ]
)
# One RESULT_TYPE row, built by field name (every field but status defaults to null). Its fields are
# RESULT_TYPE's, so a value can never land in another field's place.
ResultRow = namedtuple("ResultRow", RESULT_TYPE.fieldNames(), defaults=[None] * (len(RESULT_TYPE.fields) - 1))

# The output's columns before a profile's heads: the image, what became of it, its ImageNet tags.
LEADING_FIELDS = (
    T.StructField("image_id", T.StringType()),
    T.StructField("url", T.StringType()),
    T.StructField("status", T.StringType()),
    T.StructField("error", T.StringType()),
    T.StructField("tags", T.ArrayType(TAG_TYPE, containsNull=False)),
)
# After the heads, when model.embedding is on: the L2-normalised embedding and the norm it had.
EMBEDDING_FIELDS = (
    T.StructField("embedding", T.ArrayType(T.FloatType())),
    T.StructField("embedding_norm", T.FloatType()),
)
# The image's perceptual hash (jobs/phash.py: 63 bits, mirror-blind distance), from the decoded pixels:
# null where no image was decoded (an error row, a row on the stored-embedding path). Duplicates use it.
PHASH_FIELD = T.StructField("phash", T.LongType())
PATH_FIELD = T.StructField("path", T.StringType(), nullable=False)  # PATH_FULL or PATH_STORED_EMBEDDING
# Last, which models made the row (backbone name and version; every model's artifact name -> version),
# when and in which run.
PROVENANCE_FIELDS = (
    T.StructField("model_name", T.StringType(), nullable=False),
    T.StructField("model_version", T.StringType(), nullable=False),
    T.StructField("models", T.MapType(T.StringType(), T.StringType(), valueContainsNull=False), nullable=False),
    T.StructField("processed_at", T.TimestampType(), nullable=False),
    T.StructField("run_id", T.StringType(), nullable=False),
)


def head_columns(head: str) -> tuple[str, str]:
    """A head's two columns: its label (null below the head's min_score) and the label's score."""
    return head, f"{head}_score"


def head_fields(head: str) -> tuple[T.StructField, T.StructField]:
    label, score = head_columns(head)
    return T.StructField(label, T.StringType()), T.StructField(score, T.FloatType())


def output_fields(head_names: Iterable[str], embedding: bool) -> list[T.StructField]:
    """The output's columns in the order the job writes them, for a profile's heads and model.embedding."""
    heads = [field for head in head_names for field in head_fields(head)]
    return [*LEADING_FIELDS, *heads, *(EMBEDDING_FIELDS if embedding else ()), PHASH_FIELD, PATH_FIELD, *PROVENANCE_FIELDS]


def output_schema(head_names: Iterable[str], embedding: bool) -> T.StructType:
    return T.StructType(output_fields(head_names, embedding))


def output_columns(head_names: list[str], embedding: bool) -> list[tuple[str, str]]:
    """(name, Hive type) of every output column, in order: the Glue table's columns.

    The Hive type is the Spark type's simpleString (array<float>, map<string,string>, timestamp, ...).
    """
    return [(field.name, field.dataType.simpleString()) for field in output_fields(head_names, embedding)]


# The columns of a profile without heads or embedding: those every output has.
OUTPUT_SCHEMA = output_schema([], embedding=False)


def nullable(data_type: T.DataType) -> T.DataType:
    """The type with nulls allowed at every level: what Spark reads back from Parquet."""
    if isinstance(data_type, T.ArrayType):
        return T.ArrayType(nullable(data_type.elementType), containsNull=True)
    if isinstance(data_type, T.MapType):
        return T.MapType(nullable(data_type.keyType), nullable(data_type.valueType), valueContainsNull=True)
    if isinstance(data_type, T.StructType):
        return T.StructType([T.StructField(f.name, nullable(f.dataType)) for f in data_type.fields])
    return data_type


# jobs/similar_images.py's two outputs (docs/similar.md). neighbours: one row per image searched, its
# top similar.k by cosine, best first, never itself, with the backbone whose embeddings were compared.
NEIGHBOUR_TYPE = T.StructType([T.StructField("image_id", T.StringType()), T.StructField("score", T.FloatType())])
NEIGHBOURS_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), nullable=False),
        T.StructField("neighbours", T.ArrayType(NEIGHBOUR_TYPE, containsNull=False), nullable=False),
        T.StructField("model_name", T.StringType(), nullable=False),
        T.StructField("model_version", T.StringType(), nullable=False),
    ]
)
# duplicates: one row per image that has a near-copy. group_id: the group's smallest image_id;
# score_to_group: the image's best cosine to another image of its group.
DUPLICATES_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), nullable=False),
        T.StructField("group_id", T.StringType(), nullable=False),
        T.StructField("score_to_group", T.FloatType(), nullable=False),
    ]
)


def hive_columns(schema: T.StructType) -> list[tuple[str, str]]:
    """(name, Hive type) of a dataset's columns, in order: a Glue table's columns."""
    return [(field.name, field.dataType.simpleString()) for field in schema.fields]
