"""The Daft peer: the same manifest, decode and model file as the job, run by Daft instead of Spark.

    PYTHONPATH=.peer-site python -m tools.benchmark.peer_daft --manifest M.csv --profile conf/08-warm-start.yaml \
        --out DIR --record R.json

What a team would write in Daft for the job's work: Daft's own reader and downloader (`url.download`), a
batch function that decodes with the job's Pillow code (`jobs.decode.prepare_with`, the profile's
decode settings), and a class that builds the profile's backbone once (`model.runtime.build_model_runner`,
inference.batch_size, one TFLite thread per core) and writes the top-k class indices, their scores and
the embedding to Parquet. No heads, no ledger, no accounting: a lower bound on what a Daft job costs.
Daft is not a dependency of the project: `make peer-tools` installs it into .peer-site for this alone.
`tools/benchmark/startup_ab.py` times the whole process beside the job's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Daft reports usage to a telemetry service unless told not to; benchmarks talk only to 127.0.0.1.
NO_TELEMETRY = {"DAFT_ANALYTICS_ENABLED": "0", "SCARF_NO_ANALYTICS": "true", "DO_NOT_TRACK": "true"}


def run(manifest: Path, profile: Path, out: Path, cores: int) -> dict:
    os.environ.update(NO_TELEMETRY)
    import daft
    import numpy as np
    from daft import DataType
    from daft.functions import download

    from jobs.config import load_settings
    from jobs.decode import prepare_with
    from model.artifact import load_artifact
    from model.runtime import build_model_runner

    settings = load_settings(str(profile))
    size, top_k, batch_size = settings.decode.image_size, settings.model.top_k, settings.inference.batch_size
    pixels = DataType.tensor(DataType.uint8(), (size, size, 3))

    @daft.func.batch(return_dtype=pixels, batch_size=batch_size)
    def decode(data: daft.Series):
        return np.stack([prepare_with(blob, settings.decode) for blob in data.to_pylist()])

    @daft.cls(max_concurrency=1)
    class Backbone:
        def __init__(self) -> None:
            self.model = build_model_runner(load_artifact(settings.model.uri), batch_size, cores)

        @daft.method.batch(
            return_dtype=DataType.struct(
                {
                    "top": DataType.list(DataType.int32()),
                    "scores": DataType.list(DataType.float32()),
                    "embedding": DataType.list(DataType.float32()),
                }
            ),
            batch_size=batch_size,
        )
        def __call__(self, images: daft.Series):
            found = self.model(images.to_arrow().to_numpy_ndarray())
            probabilities = np.asarray(found["probabilities"])
            top = np.argsort(-probabilities, axis=1)[:, :top_k]
            return [
                {"top": t.tolist(), "scores": p[t].tolist(), "embedding": e.tolist()}
                for t, p, e in zip(top, probabilities, np.asarray(found["embedding"]), strict=True)
            ]

    started = time.perf_counter()
    df = daft.read_csv(str(manifest))
    df = df.with_column("data", download(df["url"]))
    df = df.with_column("pixels", decode(df["data"]))
    df = df.with_column("result", Backbone()(df["pixels"]))
    df.select("image_id", "url", "result").write_parquet(str(out))
    wall_s = time.perf_counter() - started
    rows = sum(1 for _ in manifest.open()) - 1
    return {"engine": f"daft {daft.__version__}", "images": rows, "run_s": round(wall_s, 2), "model_uri": settings.model.uri}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--profile", type=Path, required=True, help="its model, decode and inference settings")
    parser.add_argument("--out", type=Path, required=True, help="Parquet output folder")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--record", type=Path, help="write the run's facts here as JSON")
    args = parser.parse_args(argv)
    found = run(args.manifest, args.profile, args.out, args.cores)
    if args.record:
        args.record.write_text(json.dumps(found, indent=1) + "\n")
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
