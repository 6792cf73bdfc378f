"""The reference: the same tagging written the way a Spark user would first write it.

Spark's own batch-inference helper, `pyspark.ml.functions.predict_batch_udf`, used as its
documentation shows: a pandas UDF loads each image and returns it as a flattened float
array; `predict_batch_udf(make_predict_fn, ...)` loads the Keras model once per Python
worker and calls `model.predict` on batches; a second pandas UDF picks the top-k labels;
the result is written to Parquet. Same model artifact, same images, same Spark settings and
partitions as the profile it is given (the baseline), same batch size and resize/crop. Where
that profile leaves them at Spark's defaults, it does what Spark's deep-learning inference
examples do: cap the Arrow batch (REFERENCE_DEFAULTS) and repartition to the cores.

What it deliberately does not do (that is the job's work, not the reference's): thread
pools, JPEG draft decoding, uint8 transport, a traced predict function, error rows (a bad
image fails the task; the benchmark's images are all good).

Stage timings it can measure honestly are accumulated inside the UDFs: fetch and decode
(summed over rows), infer and model load (summed over predict calls / workers). Spark's
transport and the Parquet write cannot be separated from the lazy pipeline: null.

    spark-submit tools/benchmark/reference_predict_batch.py --manifest M --output O --profile P --metrics-out R
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

if __name__ == "__main__":  # spark-submit puts this folder first on sys.path: use the repo root instead
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent.parent))

REFERENCE_NAME = "predict_batch_udf-reference"
# What Spark's deep-learning inference examples set when the profile does not: an Arrow batch
# cap (10,000 rows of 600 KB image arrays would not fit in memory) - and they repartition the
# input to the cluster's cores (see `partitions` below).
REFERENCE_DEFAULTS = {"spark.sql.execution.arrow.maxRecordsPerBatch": "512"}


import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402  (module level: pandas_udf resolves the pd.Series hints here)

from jobs import metrics as M  # noqa: E402  (the job's metrics contract)
from jobs.metrics import StageTimes, jvm_started_at, run_record  # noqa: E402


def build_udfs(model_path: str, class_names, *, image_size: int, resize_shorter: int, batch_size: int, top_k: int, timings):
    """(load_image, classify, top_labels) UDFs; everything heavy happens on the executors."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import types as T
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(T.ArrayType(T.FloatType()))
    def load_image(urls: pd.Series) -> pd.Series:
        import io

        from PIL import Image

        from jobs.config import FetchSettings
        from jobs.fetch import fetch

        settings = FetchSettings()
        fetch_s = decode_s = 0.0
        out = []
        for url in urls:
            started = time.perf_counter()
            data = fetch(url, settings).data
            fetched = time.perf_counter()
            img = Image.open(io.BytesIO(data)).convert("RGB")
            scale = resize_shorter / min(img.size)
            img = img.resize((max(image_size, round(img.width * scale)), max(image_size, round(img.height * scale))))
            left, top = (img.width - image_size) // 2, (img.height - image_size) // 2
            img = img.crop((left, top, left + image_size, top + image_size))
            out.append(np.asarray(img, dtype=np.float32).reshape(-1))
            fetch_s += fetched - started
            decode_s += time.perf_counter() - fetched
        timings.add(Counter({M.FETCH_S: fetch_s, M.DECODE_S: decode_s, M.IMAGES: len(urls)}))
        return pd.Series(out)

    def make_predict_fn():
        # Runs once per Python worker (predict_batch_udf caches the returned function).
        started = time.perf_counter()
        import keras

        model = keras.saving.load_model(model_path, compile=False)
        load_s = time.perf_counter() - started
        timings.add(Counter({M.MODEL_LOAD_S: load_s, M.MODEL_LOAD_S_MAX: load_s, M.MODEL_BUILDS: 1, M.READY_AT: time.time()}))

        def predict(inputs: np.ndarray) -> np.ndarray:
            started = time.perf_counter()
            probabilities = model.predict(inputs, verbose=0)["probabilities"]
            timings.add(Counter({M.INFER_S: time.perf_counter() - started}))
            return probabilities

        return predict

    classify = predict_batch_udf(
        make_predict_fn,
        return_type=T.ArrayType(T.FloatType()),
        batch_size=batch_size,
        input_tensor_shapes=[[image_size, image_size, 3]],
    )

    tag_type = T.ArrayType(T.StructType([T.StructField("label", T.StringType()), T.StructField("score", T.FloatType())]))

    @pandas_udf(tag_type)
    def top_labels(probabilities: pd.Series) -> pd.Series:
        names = class_names.value
        out = []
        for row in probabilities:
            best = np.argsort(-np.asarray(row))[:top_k]
            out.append([{"label": names[i], "score": float(row[i])} for i in best])
        timings.add(Counter({M.END_AT: time.time()}))
        return pd.Series(out)

    return load_image, classify, top_labels


def measure_reference(args: argparse.Namespace) -> dict:
    main_started = time.time()
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from jobs.config import load_settings
    from model.artifact import load_artifact

    settings = load_settings(args.profile, args.overrides)
    artifact = load_artifact(settings.model.uri)
    if "://" in settings.model.uri or artifact.meta.get("format") != "keras":
        raise SystemExit(f"the reference loads a local Keras artifact; got {settings.model.uri} ({artifact.meta.get('format')})")
    model_path = str(Path(settings.model.uri).resolve() / artifact.meta["model_file"])

    session_started = time.perf_counter()
    conf = {**REFERENCE_DEFAULTS, **settings.spark.conf}
    builder = SparkSession.builder.appName("predict-batch-udf-reference")
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    session_s = time.perf_counter() - session_started
    jvm_started = jvm_started_at(spark)
    try:
        timings = spark.sparkContext.accumulator(Counter(), StageTimes())
        started = time.perf_counter()
        df = spark.read.csv(args.manifest, header=True).select("image_id", "url")
        read_manifest_s = time.perf_counter() - started
        partitions = settings.spark.partitions or spark.sparkContext.defaultParallelism
        df = df.repartition(partitions)
        load_image, classify, top_labels = build_udfs(
            model_path,
            spark.sparkContext.broadcast(artifact.class_names),
            image_size=settings.decode.image_size,
            resize_shorter=settings.decode.resize_shorter,
            batch_size=settings.inference.batch_size,
            top_k=settings.model.top_k,
            timings=timings,
        )
        tagged = (
            df.withColumn("image", load_image("url"))
            .withColumn("probabilities", classify("image"))
            .select(
                "image_id",
                "url",
                top_labels("probabilities").alias("tags"),
                F.lit(artifact.name).alias("model_name"),
                F.lit(artifact.version).alias("model_version"),
            )
        )
        started = time.perf_counter()
        tagged.write.mode("overwrite").parquet(args.output)
        tag_and_write_s = time.perf_counter() - started
        written = spark.read.parquet(args.output)
        rows_in = spark.read.csv(args.manifest, header=True).count()
        ok = written.where(F.col("tags").isNotNull()).count()
        ended = time.time()
        times = dict(timings.value)
    finally:
        spark.stop()
    timing = run_record(
        times, jvm_started=jvm_started, main_started=main_started, session_s=session_s, rows_in=rows_in, ended=ended,
        driver_stages={
            M.READ_MANIFEST_S: read_manifest_s,
            M.WRITE_S: None,  # lazy: the write is the action that runs everything
            M.SPARK_IO_S: None,  # not separable inside predict_batch_udf
            M.LOAD_WAIT_S: None,  # no overlap of loading and inference to wait on
            M.TASK_S: None,
            M.TAG_AND_WRITE_S: tag_and_write_s,
        },
    )  # fmt: skip
    return {
        "run_id": uuid.uuid4().hex[:12],
        "profile": args.profile,
        "settings": {
            **settings.as_dict(),
            "reference": {"udf": "pyspark.ml.functions.predict_batch_udf", "partitions": partitions, "spark_conf": conf},
        },
        "manifest": args.manifest,
        "output": args.output,
        "model_name": artifact.name,
        "model_version": artifact.version,
        "rows_in": rows_in,
        "ok": ok,
        "error": rows_in - ok,
        "skipped": 0,
        **timing,
        "tasks": partitions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="CSV with a header and a url column")
    parser.add_argument("--output", required=True)
    parser.add_argument("--profile", required=True, help="model, batch size, decode sizes, Spark settings (the baseline's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--metrics-out", type=Path)
    args = parser.parse_args(argv)
    record = measure_reference(args)
    text = json.dumps(record, indent=2)
    if args.metrics_out:
        args.metrics_out.parent.mkdir(parents=True, exist_ok=True)
        args.metrics_out.write_text(text + "\n")
    print(
        f"{REFERENCE_NAME}: {record['rows_in']} rows, {record['ok']} ok, {record['images_per_s']:.1f} images/s end to end, "
        f"start-up {record['startup_s']:.1f} s, {record['steady_images_per_s']:.1f} images/s steady"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
