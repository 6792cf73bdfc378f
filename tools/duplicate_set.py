"""A near-duplicate set of generated product photos, and the duplicate rule's defaults chosen on it.

    python -m tools.duplicate_set [--originals 300] [--seed 11] [--out reports/duplicates.json]
        [--embeddings reports/duplicate_set.npz] [--reuse [--rehash]] [--check-seed 12]

Each original is a catalogue photo of a Fashion-MNIST item (tools.datasets.product_photo). Its
copies, which must land in its duplicate group: JPEG quality 30, resized to 50%, cropped 5% off each
side, a text overlay, mirrored. Its different image, which must not: the same photo on another
background colour. Every image is decoded, embedded and hashed as the tagging job does (jobs.decode,
the default profile's backbone, jobs.phash on the model input), then, for each rule, the groups are
the connected components of the pairs the rule accepts (what jobs/similar_images.py writes), scored by:
- recall: the share of (original, copy) pairs that share a group;
- impure groups: the share of groups holding images of more than one original (a recoloured photo
  counts as an original of its own): the issue's bound is 1%;
and the share of each original's 10 nearest originals with the same product category (neighbours).

Two sweeps. Cosine alone (`thresholds`): the chosen threshold is the lowest whose impure share is
within the bound (the best recall that keeps it). The rule with the perceptual hash (`phash`,
jobs.phash.copy_pair): a candidate pair (in either image's top similar.k, or at or above the
threshold, as the job finds them) is a copy at cosine >= duplicate_threshold, or at hash distance <=
phash_distance and cosine >= phash_min_cosine; the chosen rule has the best recall within the bound,
near-ties (RECALL_TIE) going to the stricter rule. `--check-seed` scores the chosen rule on a second
set drawn with another seed (held out: nothing was chosen on it). --reuse --rehash: the saved
embeddings, the images rendered and hashed again (after a change of jobs.phash).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jobs.config import DecodeSettings, SimilarSettings, load_settings
from jobs.decode import prepare_with
from jobs.phash import copy_pair, distances, perceptual_hash
from jobs.similar import brute_force, unit_rows
from model.artifact import load_artifact
from model.runtime import build_model_runner
from tools.benchmark.runner import machine_info
from tools.datasets import FASHION_CLASSES, fashion_mnist, product_photo

COPIES = ("jpeg_q30", "half_size", "crop_5pct", "text_overlay", "mirrored")
THRESHOLDS = [round(float(t), 3) for t in np.arange(0.80, 0.995, 0.01)]
IMPURE_BOUND = 0.01
# The hash rule's sweep: the cosine threshold around cosine alone's choice, each hash distance, each lower bound.
RULE_THRESHOLDS = [0.92, 0.93, 0.94, 0.95, 0.96]
PHASH_DISTANCES = list(range(0, 17))
RECALL_TIE = 0.002  # 3 copies in 1,500: a difference this small says nothing about another set
PHASH_MIN_COSINES = [round(float(t), 3) for t in np.arange(0.50, 0.925, 0.02)]


def copy_of(photo: Image.Image, kind: str) -> Image.Image:
    """One of COPIES: the same photo as a shop or a user might have re-saved it."""
    width, height = photo.size
    if kind == "jpeg_q30":
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=30)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "half_size":
        return photo.resize((width // 2, height // 2), Image.Resampling.BILINEAR)
    if kind == "crop_5pct":
        return photo.crop((width // 20, height // 20, width - width // 20, height - height // 20))
    if kind == "text_overlay":
        marked = photo.copy()
        font = ImageFont.load_default(size=max(12, height // 12))
        ImageDraw.Draw(marked).text((width // 20, height // 20), "SALE -30%", fill=(200, 0, 0), font=font)
        return marked
    if kind == "mirrored":
        return photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    raise ValueError(f"unknown copy kind {kind}")


def recoloured(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The photo on another background colour: its near-white, unsaturated pixels tinted."""
    pixels = np.asarray(photo, dtype=np.float32)
    background = (pixels.min(axis=2) > 190) & (pixels.max(axis=2) - pixels.min(axis=2) < 30)
    colour = rng.uniform(60, 200, size=3)
    pixels[background] = pixels[background] / 255.0 * colour
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def build_set(originals: int, seed: int) -> tuple[list[Image.Image], np.ndarray, np.ndarray, np.ndarray]:
    """(images, source: the original each is (a copy of); a recoloured photo is an original of its own,
    kind: "original", one of COPIES or "recoloured", category of each image)."""
    items, labels = fashion_mnist("t10k")
    rng = np.random.default_rng(seed)
    images, source, kind_of, category = [], [], [], []
    for number, index in enumerate(rng.choice(len(items), originals, replace=False)):
        photo = product_photo(items[index], rng)
        for kind in ("original", *COPIES, "recoloured"):
            image = photo if kind == "original" else recoloured(photo, rng) if kind == "recoloured" else copy_of(photo, kind)
            images.append(image)
            source.append(originals + number if kind == "recoloured" else number)
            kind_of.append(kind)
            category.append(int(labels[index]))
    return images, np.array(source), np.array(kind_of), np.array(category)


def decode_and_hash(images: list[Image.Image], seconds: dict) -> Iterator[tuple[np.ndarray, int]]:
    """Each image as the tagging job sees it (JPEG bytes, the job's decode) and its perceptual hash, hashed
    as jobs.tagging.load_image does (of the model input); adds the seconds of each to `seconds`."""
    decode = DecodeSettings()
    for image in images:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=90)
        started = time.perf_counter()
        pixels = prepare_with(buffer.getvalue(), decode)
        decoded = time.perf_counter()
        phash = perceptual_hash(pixels)
        seconds["decode"] += decoded - started
        seconds["phash"] += time.perf_counter() - decoded
        yield pixels, phash


def embed(images: list[Image.Image], model_uri: str, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, dict]:
    """(unit embeddings, perceptual hashes, ms per image by step) as the tagging job computes them."""
    model = build_model_runner(load_artifact(model_uri), batch_size, threads=0)
    seconds = dict.fromkeys(("decode", "phash", "backbone"), 0.0)
    loaded = decode_and_hash(images, seconds)
    out, hashes = [], []
    while batch := list(itertools.islice(loaded, batch_size)):
        hashes += [phash for _, phash in batch]
        started = time.perf_counter()
        out.append(np.asarray(model(np.stack([pixels for pixels, _ in batch]))["embedding"], dtype=np.float32))
        seconds["backbone"] += time.perf_counter() - started
    return unit_rows(np.concatenate(out)), np.array(hashes, dtype=np.int64), per_image_ms(seconds, len(images))


def per_image_ms(seconds: dict, images: int) -> dict:
    return {step: round(1000 * total / images, 3) for step, total in seconds.items()}


def rehashed(data: dict, seed: int) -> dict:
    """A saved set with its hashes computed again (the images rendered again, the embeddings kept)."""
    images, source, kind, _category = build_set(int((data["kind"] == "original").sum()), seed)
    if not (np.array_equal(source, data["source"]) and np.array_equal(kind, data["kind"])):
        raise SystemExit(f"seed {seed} does not draw the saved set again: run without --reuse")
    seconds = dict.fromkeys(("decode", "phash"), 0.0)
    hashes = np.array([phash for _, phash in decode_and_hash(images, seconds)], dtype=np.int64)
    return {**data, "hashes": hashes, "cost_ms": {**data["cost_ms"], **per_image_ms(seconds, len(images))}}


def components(pairs: np.ndarray, size: int) -> np.ndarray:
    """Union-find over index pairs: each index's component root (the reference, not the Spark job's way)."""
    parent = np.arange(size)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(size)])


def score_groups(edges: np.ndarray, source: np.ndarray, kind: np.ndarray) -> dict:
    """The groups an (images x images) boolean matrix of accepted pairs makes, scored: recall (overall,
    by copy kind) and impure groups."""
    group = components(np.argwhere(np.triu(edges, k=1)), len(edges))
    copies = np.flatnonzero(np.isin(kind, COPIES))
    original_of = {source[i]: i for i in np.flatnonzero(kind == "original")}
    joined = np.array([group[c] == group[original_of[source[c]]] for c in copies])
    by_copy = {name: round(float(joined[kind[copies] == name].mean()), 4) for name in COPIES}
    in_groups = [members for members in _groups(group) if len(members) > 1]
    impure = sum(len(set(source[m])) > 1 for m in in_groups)
    return {
        "recall": round(float(joined.mean()), 4),
        "recall_by_copy": by_copy,
        "groups": len(in_groups),
        "impure_groups": impure,
        "impure_share": round(impure / max(1, len(in_groups)), 4),
    }


def score_threshold(scores: np.ndarray, source: np.ndarray, kind: np.ndarray, threshold: float) -> dict:
    return {"threshold": threshold, **score_groups(scores >= threshold, source, kind)}


def candidate_pairs(embeddings: np.ndarray, k: int) -> np.ndarray:
    """The pairs the job's search hands to the duplicate rule: each image's top k (either way round);
    the pairs at or above the threshold are added by the rule itself."""
    rows, _ = brute_force(embeddings, k=k)
    found = np.zeros((len(embeddings), len(embeddings)), dtype=bool)
    found[np.arange(len(embeddings))[:, None], rows] = True
    return found | found.T


def pair_inputs(embeddings: np.ndarray, hashes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cosine, candidate pair?, hash distance) of every pair of images."""
    return embeddings @ embeddings.T, candidate_pairs(embeddings, k), distances(hashes[:, None], hashes[None, :])


def accepted(inputs: tuple[np.ndarray, np.ndarray, np.ndarray], rule: SimilarSettings) -> np.ndarray:
    """The pairs the job links: every pair at or above the threshold (its search keeps them all), and
    the candidate pairs that jobs.phash.copy_pair accepts."""
    scores, found, apart = inputs
    return (scores >= rule.duplicate_threshold) | (found & copy_pair(scores, apart, rule))


def sweep_rule(inputs: tuple[np.ndarray, np.ndarray, np.ndarray], source: np.ndarray, kind: np.ndarray) -> list[dict]:
    """Every (duplicate_threshold, phash_distance, phash_min_cosine) of the sweep, scored."""
    points = []
    for threshold in RULE_THRESHOLDS:
        for phash_distance in PHASH_DISTANCES:
            for min_cosine in PHASH_MIN_COSINES:
                rule = SimilarSettings(duplicate_threshold=threshold, phash_distance=phash_distance, phash_min_cosine=min_cosine)
                points.append({**rule_fields(rule), **score_groups(accepted(inputs, rule), source, kind)})
    return points


def choose_rule(points: list[dict]) -> dict | None:
    """The best recall within the impure bound, recalls within RECALL_TIE of it counting as equal; of
    those, the strictest rule (fewer impure groups, a higher threshold, a smaller hash distance, a
    higher lower bound): a rule at the edge of where impure groups appear would not keep to the bound."""
    within = [p for p in points if p["impure_share"] <= IMPURE_BOUND]
    if not within:
        return None
    best = max(p["recall"] for p in within)

    def strictness(p: dict) -> tuple:
        return -p["impure_share"], p["duplicate_threshold"], -p["phash_distance"], p["phash_min_cosine"]

    return max((p for p in within if p["recall"] >= best - RECALL_TIE), key=strictness)


def distance_percentiles(scores: np.ndarray, hashes: np.ndarray, source: np.ndarray, kind: np.ndarray) -> dict:
    """Per copy kind and for the recoloured photo: its hash distance and cosine to its original (median,
    5th and 95th percentile); and each original's nearest other original (hash distance, cosine)."""
    originals = np.flatnonzero(kind == "original")
    original_of = {source[i]: i for i in originals}
    recoloured_of = {i: i + 1 + len(COPIES) for i in originals}  # build_set's order: original, copies, recoloured

    def spread(values: np.ndarray) -> dict:
        return {q: round(float(np.percentile(values, p)), 3) for q, p in (("p5", 5), ("median", 50), ("p95", 95))}

    def to_mates(members: np.ndarray, mates: np.ndarray) -> dict:
        return {"hash_distance": spread(distances(hashes[members], hashes[mates])), "cosine": spread(scores[members, mates])}

    out = {}
    for name in COPIES:
        members = np.flatnonzero(kind == name)
        out[name] = to_mates(members, np.array([original_of[source[m]] for m in members]))
    out["recoloured"] = to_mates(originals, np.array([recoloured_of[i] for i in originals]))
    among = distances(hashes[originals][:, None], hashes[originals][None, :]) + 1000 * np.eye(len(originals), dtype=np.int64)
    cosine = np.where(np.eye(len(originals), dtype=bool), -1.0, scores[np.ix_(originals, originals)])
    out["nearest_other_original"] = {"hash_distance": spread(among.min(axis=1)), "cosine": spread(cosine.max(axis=1))}
    return out


def _groups(group: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    return np.split(order, bounds)


def category_agreement(embeddings: np.ndarray, category: np.ndarray, originals: np.ndarray) -> float:
    """Share of each original's 10 nearest originals (copies left out) with its product category."""
    rows, _ = brute_force(embeddings[originals], k=10)
    return float((category[originals][rows] == category[originals][:, None]).mean())


def sweep_table(points: list[dict]) -> dict:
    """The sweep as columns and one row per rule (a row per line in the report, not a line per value)."""
    columns = [*RULE_KEYS, "recall", *(f"recall_{name}" for name in COPIES), "groups", "impure_groups"]

    def row(p: dict) -> list:
        return [*(p[key] for key in RULE_KEYS), p["recall"], *p["recall_by_copy"].values(), p["groups"], p["impure_groups"]]

    return {"columns": columns, "rows": [row(p) for p in points]}


def compact_lists(text: str) -> str:
    """Indented JSON with every list of plain values on one line."""
    return re.sub(r"\[[^\[\]{}]*\]", lambda match: json.dumps(json.loads(match.group(0))), text)


def rendered_set(originals: int, seed: int, model_uri: str) -> dict:
    """The set drawn with `seed`, embedded and hashed: source, kind, category, embeddings, hashes, cost_ms."""
    images, source, kind, category = build_set(originals, seed)
    embeddings, hashes, cost_ms = embed(images, model_uri)
    return {"source": source, "kind": kind, "category": category, "embeddings": embeddings, "hashes": hashes, "cost_ms": cost_ms}


RULE_KEYS = ("duplicate_threshold", "phash_distance", "phash_min_cosine")


def rule_fields(rule: SimilarSettings) -> dict:
    return {key: getattr(rule, key) for key in RULE_KEYS}


def rule_of(point: dict) -> SimilarSettings:
    return SimilarSettings(**{key: point[key] for key in RULE_KEYS})


def load_or_render(args: argparse.Namespace, model_uri: str) -> tuple[dict, dict]:
    """(the set the defaults are chosen on, the held-out set): rendered, or with --reuse read back from
    --embeddings (one file: the held-out set's arrays are prefixed check_), with --rehash hashed again."""
    if args.reuse:
        saved = dict(np.load(args.embeddings))
        chosen_on = {key: value for key, value in saved.items() if not key.startswith("check_")}
        held_out = {key.removeprefix("check_"): value for key, value in saved.items() if key.startswith("check_")}
        chosen_on, held_out = ({**data, "cost_ms": json.loads(str(data["cost_ms"]))} for data in (chosen_on, held_out))
        if not args.rehash:
            return chosen_on, held_out
        chosen_on, held_out = rehashed(chosen_on, args.seed), rehashed(held_out, args.check_seed)
    else:
        chosen_on = rendered_set(args.originals, args.seed, model_uri)
        held_out = rendered_set(args.originals, args.check_seed, model_uri)
    stored = {**chosen_on, **{f"check_{key}": value for key, value in held_out.items()}}
    args.embeddings.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.embeddings, **{key: json.dumps(v) if key.endswith("cost_ms") else v for key, v in stored.items()})
    return chosen_on, held_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.duplicate_set", description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--check-seed", type=int, default=12, help="a second set as large, held out: the chosen rule scored on it"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/duplicates.json"))
    parser.add_argument(
        "--embeddings", type=Path, default=Path("reports/duplicate_set.npz"), help="the embeddings, for bench-similar --real"
    )
    parser.add_argument("--reuse", action="store_true", help="score the sets saved in --embeddings again (no rendering)")
    parser.add_argument("--rehash", action="store_true", help="with --reuse: hash the images again (the hash changed)")
    args = parser.parse_args(argv)
    data, check = load_or_render(args, load_settings().model.uri)
    embeddings, hashes, source, kind, category = (data[n] for n in ("embeddings", "hashes", "source", "kind", "category"))
    scores = embeddings @ embeddings.T
    points = [score_threshold(scores, source, kind, t) for t in THRESHOLDS]
    within_bound = [p for p in points if p["impure_share"] <= IMPURE_BOUND]
    chosen = min(within_bound, key=lambda p: p["threshold"]) if within_bound else None
    k = SimilarSettings().k
    rules = sweep_rule(pair_inputs(embeddings, hashes, k), source, kind)
    chosen_rule = choose_rule(rules)
    held_out = {"seed": args.check_seed, "images": len(check["embeddings"])}
    check_inputs = pair_inputs(check["embeddings"], check["hashes"], k)
    if chosen_rule:
        held_out["rule"] = score_groups(accepted(check_inputs, rule_of(chosen_rule)), check["source"], check["kind"])
    if chosen:
        held_out["cosine_alone"] = score_threshold(check_inputs[0], check["source"], check["kind"], chosen["threshold"])
    originals = np.flatnonzero(kind == "original")
    machine = machine_info()
    report = {
        "images": len(embeddings),
        "originals": len(originals),
        "copies": list(COPIES),
        "different": "recoloured background (an original of its own)",
        "impure_bound": IMPURE_BOUND,
        "chosen_threshold": chosen and chosen["threshold"],
        "chosen": chosen,
        "neighbour_category_agreement_at_10": round(category_agreement(embeddings, category, originals), 4),
        "categories": FASHION_CLASSES,
        "thresholds": points,
        "phash": {
            "rule": "copy if cosine >= duplicate_threshold, or hash distance <= phash_distance and cosine >= "
            f"phash_min_cosine, among each image's top {k} (jobs.phash.copy_pair)",
            "chosen": chosen_rule,
            "held_out": held_out,
            "to_original": distance_percentiles(scores, hashes, source, kind),
            "cost_ms_per_image": {**data["cost_ms"], "cpu": machine["cpu_model"], "cpus": machine["cpus"]},
            "sweep": sweep_table(rules),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(compact_lists(json.dumps(report, indent=2)) + "\n")
    shown = {key: value for key, value in report.items() if key not in ("thresholds", "categories", "phash")}
    print(json.dumps(shown | {"phash": {key: value for key, value in report["phash"].items() if key != "sweep"}}, indent=2))
    for p in points:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
