"""Planning a run: the manifest against the ledger -> the rows still to tag, each with its path.

The counts the accounting needs (rows in, unique image_ids, rows left after the ledger, rows on the
stored-embedding path) are observed while the tagging pass runs, or counted separately when
spark.single_pass is off.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from jobs.infer import ModelBundle
from jobs.ledger import coverage, plan_paths, skip_done
from jobs.schema import PATH_STORED_EMBEDDING

# Adaptive execution replaces a plan it finds empty at run time by an empty relation, and the
# DataFrame.observe counts inside it go with it: Observation.get then waits forever (an --incremental
# run with nothing left to do never ended; SPARK-54620). The counts need that one rule off.
AQE_EXCLUDED_RULES = "spark.sql.adaptive.optimizer.excludedRules"
EMPTY_RELATION_RULE = "org.apache.spark.sql.execution.adaptive.AQEPropagateEmptyRelation"


def plan_pending(
    manifest: DataFrame,
    ledger: DataFrame | None,
    *,
    models: ModelBundle,
    embedding: bool,
    run_id: str,
    incremental: bool,
    partitions: int,
    single_pass: bool = True,
    unique_ids: bool = False,
    observe: bool = True,
) -> tuple[DataFrame, Callable[[], dict]]:
    """Manifest -> rows still to tag with their path, and a function giving the accounting counts after the action.

    single_pass: the counts are observed while the tagging pass runs and the dedup reuses the
    repartition shuffle. Otherwise (the straightforward way) each count is its own Spark action.
    unique_ids: the driver counted the manifest's image_ids and each is there once (jobs.manifest
    Manifest.ids_unique): no dedup and, in a single pass, no shuffle before the tagging.
    observe: False for a probe of the plan (no counts): Spark 3.5 gives an observation the metrics of
    the first query that observed its name, so a probe that observed would take the plan's.
    """
    if single_pass:
        keep_observations(manifest.sparkSession)
    stored = F.coalesce(F.sum(F.when(F.col("path") == PATH_STORED_EMBEDDING, 1).otherwise(0)), F.lit(0))
    metrics = {"rows_in": [], "unique": [], "after_ledger": [stored.alias("stored")]}
    observations = {name: Observation(name) for name in metrics}
    counted: dict[str, int] = {}

    def measure(df: DataFrame, name: str) -> DataFrame:
        if not observe:
            return df
        if single_pass:
            return df.observe(observations[name], F.count(F.lit(1)).alias("n"), *metrics[name])
        counted[name] = df.count()
        if name == "after_ledger":
            counted["stored_embedding"] = df.where(F.col("path") == PATH_STORED_EMBEDDING).count()
        return df

    if unique_ids:
        rows = measure(spread_local(manifest, partitions if single_pass else 0), "rows_in")
    else:
        rows = measure(manifest, "rows_in")
        if partitions and single_pass:
            rows = rows.repartition(partitions, "image_id")  # the dedup below reuses this shuffle
        rows = rows.dropDuplicates(["image_id"])
    rows = measure(rows, "unique")
    earlier = ledger.where(~F.col("run_id").eqNullSafe(run_id)) if ledger is not None and incremental else None
    rows = plan_paths(rows, coverage(earlier, models) if earlier is not None else None, models, embedding)
    rows = measure(rows, "after_ledger")
    if ledger is not None:
        rows = skip_done(rows, ledger.where(F.col("run_id") == run_id))  # resumed: already written
    if partitions and not single_pass:
        rows = rows.repartition(partitions)

    def counts() -> dict:
        if not single_pass:
            return counted
        values = {name: int(obs.get["n"]) for name, obs in observations.items()}
        return {**values, "stored_embedding": int(observations["after_ledger"].get["stored"])}

    return rows, counts


def keep_observations(spark: SparkSession) -> None:
    """Exclude the adaptive rule that drops observed counts, keeping any rules the profile excluded."""
    rules = [rule.strip() for rule in (spark.conf.get(AQE_EXCLUDED_RULES, "") or "").split(",") if rule.strip()]
    if EMPTY_RELATION_RULE not in rules:
        spark.conf.set(AQE_EXCLUDED_RULES, ",".join([*rules, EMPTY_RELATION_RULE]))


def spread_local(rows: DataFrame, partitions: int) -> DataFrame:
    """Rows the driver read (a local relation: about one slice per core) over `partitions` tasks.

    Fewer by coalescing them, without a shuffle; more only through one (a hash of image_id).
    """
    if not partitions:
        return rows
    if partitions <= rows.rdd.getNumPartitions():
        return rows.coalesce(partitions)
    return rows.repartition(partitions, "image_id")
