"""Train a head on the backbone's embedding: your own labelled images, or the built-in product-category head.

    python -m tools.train_head --labels URI --name NAME [--profile P] [--set key=value ...]
    python -m tools.train_head [--profile P] [--train-size N] ...   (the built-in head, product_category)
    make train-head [LABELS=URI NAME=NAME] [PROFILE=conf/local.yaml] [TRAIN_HEAD_ARGS='--set fetch.threads=8']

One way to train a head, whatever its labelled images are:

1. labelled images, embedded with the job's profile (its backbone, model.uri, and its decode settings):
   - with --labels: a CSV or Parquet file with columns `url` and `label` (and optionally
     `image_id`), local or s3://; or a local folder with one subfolder per class (each image file
     in it, at any depth, becomes a file:// url labelled with the subfolder's name). Rows without
     a url or label, and repeats of an image_id (the first row is kept), are dropped and counted.
     A manifest (image_id, url) with them plus the out-of-domain photos
     (tools.datasets.real_photo_paths, image_id `_ood_:<file>`) goes through the real job,
     `spark-submit jobs/tag_images.py --set model.heads=[] --set model.embedding=true`, with the
     profile's spark-submit options: the cluster does the embedding, so a million images is no
     harder than a thousand. Rows the job could not fetch or decode are counted as dropped, with
     examples. Input: the L2-normalised embedding (input_normalisation l2); split per class;
   - without --labels: Fashion-MNIST items rendered as product photos (tools/category_head.py,
     with the profile's decode settings), embedded by the profile's backbone on this machine and
     cached; the head is product_category, on the raw embedding (input_normalisation none); the
     official test items are the test split, and the head is written only when its test accuracy
     reaches --target (default TARGET_TEST_ACCURACY);
2. train (tools/head_training.py, the same for both): refuse a single class or a class with too
   few usable images (naming it); linear and MLP heads chosen on validation; temperature scaling
   baked in; test accuracy, per-class precision/recall, ECE before/after, a recommended
   min_score, the out-of-domain check;
3. write: model/artifacts/NAME (Keras) and model/artifacts/NAME_tflite (model.convert);
   reports/train-head/NAME/evaluation.json and confusion_matrix.png; the profile entry to use the
   head is logged.

Exit status: 0 done, 2 bad input (labels, name, profile: the message names the problem),
1 the embedding job failed or the built-in head missed its target.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.config import IMAGE_EXTENSIONS, RESERVED_COLUMNS, ConfigError, Settings, add_overrides_argument, load_settings
from jobs.exits import EXIT_BAD_INPUT, exit_status
from jobs.manifest import stable_image_id
from jobs.spark_args import spark_submit_args
from model.artifact import ArtifactError
from tools import category_head
from tools.head_training import (
    MIN_EXAMPLES_PER_CLASS,
    LabelError,
    LabelledEmbeddings,
    Recipe,
    check_classes,
    fit_head,
    labelled_embeddings,
    write_head,
)

log = logging.getLogger(__name__)
EXIT_FAILED = 1
JOB_SCRIPT = Path(__file__).resolve().parents[1] / "jobs" / "tag_images.py"
IMAGE_SUFFIXES = tuple(IMAGE_EXTENSIONS)
OOD_PREFIX = "_ood_:"
# Artifact names that hold the shipped models: a head on your own labels must not overwrite them.
BUILT_IN = {category_head.HEAD_NAME, "efficientnet_lite0"}
# The built-in head is written only at this test accuracy (its test split: Fashion-MNIST's test items, plain renders).
TARGET_TEST_ACCURACY = 0.90
OWN_VAL_FRACTION = 0.15
MAX_EXAMPLES = 10  # failed URLs quoted in the report


@dataclass(frozen=True)
class Labelled:
    image_id: str
    url: str
    label: str


@dataclass
class Labels:
    """The usable labelled rows of a label source, and what was dropped on reading it (reason -> count)."""

    rows: list[Labelled]
    read: int
    dropped: Counter


# --------------------------------------------------------------------------------------------
# 1. labels
# --------------------------------------------------------------------------------------------
def check_name(name: str) -> str:
    """NAME becomes the artifact's name and, in the suggested profile entry, the output column."""
    if not name:
        raise LabelError("NAME is required: the head's name (make train-head LABELS=... NAME=my_head)")
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", name):
        raise LabelError(f"NAME={name!r}: use 1-41 lower-case letters, digits and _, starting with a letter (it names a column)")
    if name in RESERVED_COLUMNS or name.endswith("_score"):
        raise LabelError(f"NAME={name!r}: clashes with an output column of the job; choose another name")
    if name in BUILT_IN:
        raise LabelError(f"NAME={name!r}: that is a shipped model's artifact; choose another name")
    return name


def _read_bytes(uri: str) -> bytes:
    if uri.startswith("s3://"):
        from jobs.fetch import s3_client  # the project's S3 client: honours AWS_ENDPOINT_URL

        parsed = urlparse(uri)
        try:
            return s3_client().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
        except Exception as exc:  # botocore raises many shapes; all mean "cannot read it"
            raise LabelError(f"cannot read the label file {uri}: {exc}") from exc
    path = Path(uri)
    if not path.is_file():
        raise LabelError(f"label file not found: {uri}")
    return path.read_bytes()


def read_label_table(uri: str) -> list[dict[str, str | None]]:
    """The rows of a CSV (header) or Parquet label file, local or s3://, as dicts of lower-cased column -> string."""
    lower = uri.lower()
    if lower.endswith((".csv", ".csv.gz")):
        data = _read_bytes(uri)
        if lower.endswith(".gz"):
            data = gzip.decompress(data)
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
        rows = [{(k or "").strip().lower(): v for k, v in row.items()} for row in reader]
        columns = [c.strip().lower() for c in reader.fieldnames or []]
    else:
        local_dataset = not uri.startswith("s3://") and Path(uri).is_dir()
        try:
            table = pq.read_table(uri if local_dataset else pa.BufferReader(_read_bytes(uri)))
        except pa.ArrowInvalid as exc:
            raise LabelError(f"{uri}: not a Parquet file ({exc}); label files are .csv (with a header) or Parquet") from exc
        table = table.rename_columns([c.lower() for c in table.column_names])
        columns = table.column_names
        keep = [c for c in ("image_id", "url", "label") if c in columns]
        table = table.select(keep).cast(pa.schema([(c, pa.string()) for c in keep]))
        rows = table.to_pylist()
    missing = [c for c in ("url", "label") if c not in columns]
    if missing:
        raise LabelError(f"{uri} has no {' or '.join(repr(c) for c in missing)} column (columns: {', '.join(columns) or 'none'})")
    return rows


def read_label_folder(root: Path) -> list[dict[str, str | None]]:
    """One subfolder per class: each image file under it (any depth) -> {url: file://..., label: subfolder}."""
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise LabelError(f"{root}: no class subfolders (expected one subfolder per class, holding its images)")
    rows = []
    for folder in classes:
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise LabelError(f"class folder {folder} has no image files ({', '.join(IMAGE_SUFFIXES)})")
        rows += [{"url": p.resolve().as_uri(), "label": folder.name} for p in files]
    return rows


def is_label_folder(uri: str) -> bool:
    """A local directory that is not a Parquet dataset (no .parquet file at its top level)."""
    path = Path(uri)
    return not uri.startswith("s3://") and path.is_dir() and not any(path.glob("*.parquet"))


def read_labels(uri: str) -> Labels:
    """Usable (image_id, url, label) rows; image_id as the job would give it (given, else the URL hash)."""
    uri = uri[len("file://") :] if uri.startswith("file://") else uri
    raw = read_label_folder(Path(uri)) if is_label_folder(uri) else read_label_table(uri)
    dropped: Counter = Counter()
    rows, seen = [], set()
    for row in raw:
        url, label = (row.get("url") or "").strip(), (row.get("label") or "").strip()
        if not url or not label:
            dropped["no url or label"] += 1
            continue
        if "\n" in label or "\r" in label:
            raise LabelError(f"label {label!r} (url {url}) contains a line break; class names are one line each")
        image_id = (row.get("image_id") or "").strip() or stable_image_id(url)
        if image_id in seen:
            dropped["duplicate image_id (first row kept)"] += 1
            continue
        seen.add(image_id)
        rows.append(Labelled(image_id, url, label))
    if any(r.image_id.startswith(OOD_PREFIX) for r in rows):
        raise LabelError(f"image_ids starting with {OOD_PREFIX!r} are reserved for the out-of-domain check")
    log.info("%s: %d rows, %d usable, dropped %s", uri, len(raw), len(rows), dict(dropped) or "none")
    return Labels(rows, len(raw), dropped)


# --------------------------------------------------------------------------------------------
# 2. embed: the tagging job itself
# --------------------------------------------------------------------------------------------
def out_of_domain_photos() -> dict[str, str]:
    """image_id -> file:// url of the shipped real photos (none when scikit-image is not installed)."""
    from tools.datasets import real_photo_paths

    try:
        return {f"{OOD_PREFIX}{p.name}": p.resolve().as_uri() for p in real_photo_paths() if p.is_file()}
    except SystemExit as exc:  # skimage_data_dir: scikit-image is missing
        log.warning("no out-of-domain check: %s", exc)
        return {}


def write_manifest(path: Path, rows: list[Labelled], extra: dict[str, str]) -> Path:
    """Parquet (image_id, url): the labelled images, then the extra (out-of-domain) ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [r.image_id for r in rows] + list(extra)
    urls = [r.url for r in rows] + list(extra.values())
    pq.write_table(pa.table({"image_id": pa.array(ids, pa.string()), "url": pa.array(urls, pa.string())}), path)
    return path


def embedding_overrides(overrides: list[str]) -> list[str]:
    """The caller's --set overrides, then what this command needs: no heads, the embedding column."""
    return [*overrides, "model.heads=[]", "model.embedding=true"]


def job_command(
    manifest: str, output: str, *, profile: str | None, overrides: list[str], spark_submit: str, metrics: Path | None = None
) -> list[str]:
    """spark-submit with the profile's options, running the tagging job for embeddings only."""
    sets = embedding_overrides(overrides)
    settings = load_settings(profile, sets)
    command = [spark_submit, *spark_submit_args(settings), str(JOB_SCRIPT), "--manifest", manifest, "--output", output]
    if profile:
        command += ["--profile", profile]
    for value in sets:
        command += ["--set", value]
    if metrics:
        command += ["--metrics-out", str(metrics)]
    return command


def find_spark_submit() -> str:
    beside = Path(sys.executable).parent / "spark-submit"
    found = str(beside) if beside.is_file() else shutil.which("spark-submit")
    if not found:
        raise LabelError("spark-submit not found beside this Python or on PATH (make install puts it in .venv/bin)")
    return found


class JobFailed(RuntimeError):
    """The embedding job exited non-zero; exit_code is its status."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def run_job(command: list[str], log_file: Path) -> float:
    """Run the job (its output kept in log_file); the seconds it took, or JobFailed."""
    env = os.environ.copy()
    env.setdefault("PYSPARK_PYTHON", sys.executable)  # Python workers: this venv's interpreter
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    log.info("embedding job: %s", " ".join(command))
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(f"$ {' '.join(command)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    if result.returncode != 0:
        said = (result.stdout + result.stderr).strip().splitlines()
        errors = [line for line in said if line.startswith("error:")] or said[-15:]
        raise JobFailed(
            f"the embedding job exited {result.returncode} (log: {log_file}):\n" + "\n".join(errors), result.returncode
        )
    summary = [line for line in result.stdout.splitlines() if line.strip()]
    log.info("embedding job done in %.0f s:\n%s", seconds, "\n".join(summary[:12]))
    return seconds


@dataclass
class JobRows:
    """The job's output for the manifest: embeddings of the ok rows, errors of the others."""

    embeddings: dict[str, np.ndarray]
    errors: dict[str, str]


def read_job_output(output: str) -> JobRows:
    """(image_id, status, error, embedding) rows of the job's Parquet output, a local path or s3://."""
    columns = ["image_id", "status", "error", "embedding"]
    if output.startswith("s3://"):
        from pyarrow import fs

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        s3 = fs.S3FileSystem(endpoint_override=endpoint) if endpoint else fs.S3FileSystem()
        table = pq.read_table(output[len("s3://") :].rstrip("/"), columns=columns, filesystem=s3)
    else:
        table = pq.read_table(output, columns=columns)
    ok = table.filter(pc.equal(table["status"], "ok"))
    vectors = ok["embedding"].combine_chunks()
    if vectors.null_count:
        raise RuntimeError(f"{output}: ok rows without an embedding (was model.embedding off?)")
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    matrix = flat.reshape(len(ok), -1) if len(ok) else np.empty((0, 0), np.float32)
    failed = table.filter(pc.not_equal(table["status"], "ok"))
    return JobRows(
        dict(zip(ok["image_id"].to_pylist(), matrix, strict=True)),
        dict(zip(failed["image_id"].to_pylist(), failed["error"].to_pylist(), strict=True)),
    )


def join_embeddings(labels: Labels, job: JobRows) -> tuple[np.ndarray, list[str], dict]:
    """(embeddings, labels) of the rows the job embedded, and the counts of what was used and dropped."""
    dropped = Counter(labels.dropped)
    vectors, names, failed = [], [], []
    for row in labels.rows:
        if row.image_id in job.embeddings:
            vectors.append(job.embeddings[row.image_id])
            names.append(row.label)
        elif row.image_id in job.errors:
            dropped["failed in the job (fetch or decode error)"] += 1
            if len(failed) < MAX_EXAMPLES:
                failed.append({"image_id": row.image_id, "url": row.url, "label": row.label, "error": job.errors[row.image_id]})
        else:
            dropped["missing from the job output"] += 1
    counts = {
        "rows": labels.read,
        "used": len(names),
        "dropped": sum(dropped.values()),
        "dropped_by_reason": dict(dropped),
        "failed_examples": failed,
        "used_per_class": dict(sorted(Counter(names).items())),
    }
    x = np.stack(vectors) if vectors else np.empty((0, 1280), np.float32)
    return x, names, counts


# --------------------------------------------------------------------------------------------
# 3. the two sources of labelled embeddings; train and write (tools/head_training.py)
# --------------------------------------------------------------------------------------------
def backbone_for_heads(model_uri: str) -> dict:
    """{"name", "version"} a head records: the Keras backbone's version (a TFLite backbone's converted_from)."""
    from jobs.fetch import s3_client
    from model.artifact import load_artifact

    meta = load_artifact(model_uri, s3_client=s3_client).meta
    return {
        "name": meta["name"],
        "version": meta.get("converted_from") or meta["version"],
        "job_backbone": model_uri,
        "job_backbone_version": meta["version"],
    }


@dataclass
class Source:
    """Labelled embeddings from one source, what the report says of them, and the out-of-domain embeddings."""

    data: LabelledEmbeddings
    about: dict
    out_of_domain: dict[str, np.ndarray]
    ood_failed: dict[str, str]
    embedding_s: float


def own_labelled(args: argparse.Namespace, settings: Settings) -> Source:
    """--labels: the labelled images embedded by the tagging job (spark-submit)."""
    labels = read_labels(args.labels)
    check_classes([r.label for r in labels.rows], args.min_per_class)  # before any Spark work
    work = args.work / args.name
    ood_urls = out_of_domain_photos() if args.ood else {}
    manifest = write_manifest(work / "manifest.parquet", labels.rows, ood_urls)
    # The embedding job replaces its output: never the given location itself (it may hold a catalogue).
    output = f"{args.job_output.rstrip('/')}/train-head-{args.name}" if args.job_output else str((work / "embeddings").resolve())
    command = job_command(
        str(manifest.resolve()),
        output,
        profile=args.profile,
        overrides=args.overrides,
        spark_submit=args.spark_submit or find_spark_submit(),
        metrics=work / "metrics.json",
    )
    job_s = run_job(command, work / "job.log")
    job = read_job_output(output)
    x, names, counts = join_embeddings(labels, job)
    log.info("used %d images, dropped %d: %s", counts["used"], counts["dropped"], counts["dropped_by_reason"])
    data = labelled_embeddings(
        x,
        names,
        val_fraction=args.val_fraction or OWN_VAL_FRACTION,
        test_fraction=args.test_fraction,
        min_per_class=args.min_per_class,
        seed=args.seed,
    )
    metrics = json.loads((work / "metrics.json").read_text()) if (work / "metrics.json").is_file() else {}
    job_info = {
        "command": command,
        "seconds": round(job_s, 1),
        "rows": len(labels.rows) + len(ood_urls),
        "steady_images_per_s": round(metrics.get("steady_images_per_s") or 0, 1) or None,
        "output": output,
    }
    return Source(
        data,
        {"labels": args.labels, "counts": counts, "embedding_job": job_info},
        {k[len(OOD_PREFIX) :]: job.embeddings[k] for k in ood_urls if k in job.embeddings},
        {k[len(OOD_PREFIX) :]: job.errors.get(k, "missing from the job output") for k in ood_urls if k not in job.embeddings},
        job_s,
    )


def built_in_labelled(args: argparse.Namespace, settings: Settings, backbone: dict, embed: category_head.Embed) -> Source:
    """No --labels: Fashion-MNIST renders made with the profile's decode settings, embedded by its backbone."""
    started = time.perf_counter()
    options = category_head.FashionOptions(
        train_size=args.train_size,
        test_size=args.test_size,
        val_fraction=args.val_fraction or category_head.FashionOptions.val_fraction,
        plain_share=args.plain_share,
        gate=args.gate,
        cache=args.cache,
        seed=args.seed,
    )
    data, about = category_head.fashion_embeddings(
        options,
        decode=settings.decode,
        embed=embed,
        backbone_version=backbone["job_backbone_version"],
        batch_size=settings.inference.batch_size,
    )
    ood = category_head.out_of_domain_embeddings(embed, decode=settings.decode) if args.ood else {}
    return Source(data, about, ood, {}, time.perf_counter() - started)


def recipe_of(args: argparse.Namespace) -> Recipe:
    return Recipe(
        kinds=tuple(k.strip() for k in args.heads.split(",") if k.strip()),
        epochs=args.epochs,
        target_precision=args.target_precision,
        seed=args.seed,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--labels", help="CSV/Parquet with url,label (local or s3://), or a class-folder tree; none: the built-in head"
    )
    parser.add_argument("--name", help="the head's name (with --labels): artifact model/artifacts/NAME(_tflite), report dir")
    parser.add_argument(
        "--profile", help="the job's profile (default conf/local.yaml): backbone, decode, Spark and fetch settings"
    )
    add_overrides_argument(parser, "profile override, for the embedding and the decode (repeatable)")
    parser.add_argument("--artifacts", type=Path, default=Path("model/artifacts"), help="where the head artifacts go")
    parser.add_argument("--reports", type=Path, default=Path("reports/train-head"), help="evaluation goes to REPORTS/NAME")
    parser.add_argument("--heads", default="linear,mlp", help="head kinds to train and choose from")
    parser.add_argument(
        "--val-fraction", type=float, help=f"validation share (default {OWN_VAL_FRACTION}; built-in: 0.1 of --train-size)"
    )
    parser.add_argument("--target-precision", type=float, default=0.9, help="validation precision the min_score keeps")
    parser.add_argument(
        "--target", type=float, help=f"test accuracy the head needs to be written (built-in default {TARGET_TEST_ACCURACY})"
    )
    parser.add_argument("--epochs", type=int, default=Recipe.epochs, help="at most; early stopping on validation loss")
    parser.add_argument("--no-ood", dest="ood", action="store_false", help="skip the out-of-domain check")
    parser.add_argument("--seed", type=int, default=7)
    own = parser.add_argument_group("your own labelled images (--labels)")
    own.add_argument("--work", type=Path, default=Path("data/train-head"), help="manifest, job output and log go to WORK/NAME")
    own.add_argument(
        "--job-output",
        help="where the job writes the embeddings: under this URI, in a folder "
        "train-head-NAME that each run replaces (default WORK/NAME/embeddings; s3:// on a cluster)",
    )
    own.add_argument("--test-fraction", type=float, default=0.15)
    own.add_argument("--min-per-class", type=int, default=MIN_EXAMPLES_PER_CLASS, help="usable images a class needs")
    own.add_argument("--spark-submit", help="spark-submit to use (default: beside this Python, else PATH)")
    built_in = parser.add_argument_group("the built-in product-category head (no --labels)")
    defaults = category_head.FashionOptions
    built_in.add_argument(
        "--train-size", type=int, default=defaults.train_size, help="items of the 60,000 training split (stratified)"
    )
    built_in.add_argument(
        "--test-size", type=int, default=defaults.test_size, help="test items to evaluate (all 10,000 for the record)"
    )
    built_in.add_argument(
        "--plain-share", type=float, default=defaults.plain_share, help="share of training items rendered plain"
    )
    built_in.add_argument("--gate", choices=sorted(category_head.RENDERS), default=defaults.gate, help="the test split's render")
    built_in.add_argument("--cache", type=Path, default=defaults.cache, help="embedding cache directory")
    built_in.add_argument("--pipeline-check", type=int, default=200, help="product photos run through the job's decode path")
    return parser.parse_args(argv)


def train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.labels:
        check_name(args.name)
    elif args.name not in (None, category_head.HEAD_NAME):
        raise LabelError(f"NAME={args.name!r} needs LABELS: without labelled images the head is {category_head.HEAD_NAME}")
    name = args.name if args.labels else category_head.HEAD_NAME
    # Cheap checks before any embedding work: the profile and the backbone.
    settings = load_settings(args.profile, embedding_overrides(args.overrides))
    backbone = backbone_for_heads(settings.model.uri)
    embed = category_head.job_backbone(settings.model.uri, batch_size=settings.inference.batch_size)
    source = own_labelled(args, settings) if args.labels else built_in_labelled(args, settings, backbone, embed)

    head = fit_head(source.data, name=name, recipe=recipe_of(args), out_of_domain=source.out_of_domain)
    if head.record["out_of_domain"] is not None:
        head.record["out_of_domain"]["failed"] = source.ood_failed
    about = dict(source.about)
    checks_s = time.perf_counter()
    if not args.labels and args.pipeline_check:
        about["product_photo_check"] = category_head.product_photo_check(
            head.model, embed, args.pipeline_check, args.seed, decode=settings.decode
        )
    about["timings"] = {
        "embedding_s": round(source.embedding_s, 1),
        "train_s": head.record.pop("train_s"),
        "checks_s": round(time.perf_counter() - checks_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }
    target = args.target if args.target is not None or args.labels else TARGET_TEST_ACCURACY
    record = write_head(
        head,
        name=name,
        input_normalisation=source.data.input_normalisation,
        backbone=backbone,
        artifacts=args.artifacts,
        reports=args.reports,
        about=about,
        target=target,
    )
    calibration = record["calibration"]
    ood_record = record["out_of_domain"]
    ood_said = f"; out-of-domain above it: {ood_record['labelled_above_min_score']}/{ood_record['images']}" if ood_record else ""
    log.info(
        "%s: %s head, test top-1 %.2f%% on %d images; ECE (test) %.3f -> %.3f with T=%.3f; recommended min_score %s%s",
        name,
        record["head_type"],
        100 * record["test_accuracy"],
        record["split"]["test"],
        calibration["test"]["ece_before"],
        calibration["test"]["ece_after"],
        calibration["temperature"],
        record["recommended_min_score"],
        ood_said,
    )
    if not record["passed"]:
        log.error("test accuracy %.4f is below the target %.2f: no artifact written", record["test_accuracy"], target)
        return EXIT_FAILED
    log.info("wrote %s and %s; report %s", record["artifact"], record["tflite_artifact"], args.reports / name)
    log.info("to tag with it, add to a profile: %s", record["profile_entry"])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    def failed(exc: JobFailed) -> int:  # the job's own bad-input status passes through
        return EXIT_BAD_INPUT if exc.exit_code == EXIT_BAD_INPUT else EXIT_FAILED

    return exit_status(
        lambda: train(args), {**dict.fromkeys((LabelError, ConfigError, ArtifactError), EXIT_BAD_INPUT), JobFailed: failed}
    )


if __name__ == "__main__":
    sys.exit(main())
