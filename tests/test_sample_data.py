"""Sample datasets (tools/sample_data.py): seeded, and every argument is honoured."""

import csv
from pathlib import Path
from urllib.parse import urlsplit

from tools import sample_data


def product_bytes(manifest: Path) -> list[bytes]:
    """The generated product photos a manifest lists, as bytes."""
    with manifest.open() as f:
        urls = [row["url"] for row in csv.DictReader(f) if row["image_id"].startswith("img-")]
    return [Path(urlsplit(url).path).read_bytes() for url in urls]


def test_demo_manifest_honours_the_seed(tmp_path, capsys):
    assert sample_data.main(["--demo", "--out", str(tmp_path / "a"), "--images", "2", "--seed", "5"]) == 0
    manifest = tmp_path / "a" / "manifest.csv"
    assert capsys.readouterr().out.strip() == str(manifest)
    with manifest.open() as f:
        ids = [row["image_id"] for row in csv.DictReader(f)]
    assert ids[:6] == [f"photo-{p.split('.')[0]}" for p in sample_data.REAL_PHOTOS]
    assert ids[6:] == ["img-000000", "img-000001", "bad-missing", "bad-not-an-image"]
    again = sample_data.local_demo_manifest(tmp_path / "b", 2, seed=5)
    other = sample_data.local_demo_manifest(tmp_path / "c", 2, seed=6)
    assert product_bytes(manifest) == product_bytes(again)
    assert product_bytes(manifest) != product_bytes(other)
