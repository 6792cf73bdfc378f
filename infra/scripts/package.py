"""Build the code package that the EMR bootstrap action installs on every node.

The tarball holds ``jobs/``, ``model/`` (Python sources only, never the model
artifacts), ``conf/``, ``requirements.txt`` and the packaging files. It is
byte-for-byte reproducible (sorted entries, fixed mtimes, owners and modes),
so Terraform re-uploads it, and replaces the cluster, only when the code
changes.

Usage::

    python infra/scripts/package.py [--root .] [--output dist/image-tagger-code.tar.gz]
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import sys
import tarfile
from pathlib import Path

log = logging.getLogger("package")

PACKAGE_DIRS = ("jobs", "model", "conf")
PACKAGE_FILES = ("requirements.txt", "setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in")
REQUIRED = ("jobs/tag_images.py", "requirements.txt", "setup.py")
EXCLUDED_DIR_NAMES = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
EXCLUDED_PREFIXES = (("model", "artifacts"),)  # the model ships separately, to S3
EXCLUDED_SUFFIXES = {".pyc", ".pyo"}


class PackageError(RuntimeError):
    """The repository lacks a file the package needs."""


def collect(root: Path) -> list[Path]:
    """Return the repository-relative paths to package, sorted."""
    missing = [name for name in REQUIRED if not (root / name).is_file()]
    if missing:
        raise PackageError(f"cannot package {root}: missing {', '.join(missing)}")
    paths: list[Path] = []
    for name in PACKAGE_FILES:
        if (root / name).is_file():
            paths.append(Path(name))
    for top in PACKAGE_DIRS:
        base = root / top
        if not base.is_dir():
            continue
        for path in base.rglob("*"):
            rel = path.relative_to(root)
            if any(part in EXCLUDED_DIR_NAMES for part in rel.parts):
                continue
            if any(rel.parts[: len(prefix)] == prefix for prefix in EXCLUDED_PREFIXES):
                continue
            if path.is_file() and path.suffix not in EXCLUDED_SUFFIXES:
                paths.append(rel)
    return sorted(paths, key=lambda p: p.as_posix())


def build(root: Path, output: Path) -> Path:
    """Write a reproducible ``.tar.gz`` of the package to ``output``."""
    files = collect(root)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            data = (root / rel).read_bytes()
            info = tarfile.TarInfo(rel.as_posix())
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(output.suffix + ".tmp")
    with open(tmp, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
        gz.write(raw.getvalue())
    tmp.replace(output)
    log.info("packaged %d files into %s (%d bytes)", len(files), output, output.stat().st_size)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("dist/image-tagger-code.tar.gz"),
        help="tarball to write",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        build(args.root.resolve(), args.output)
    except PackageError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
