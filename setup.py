"""Packaging for the image-tagging job: the `jobs` and `model` packages.

Runtime dependencies are pinned in requirements.txt (installed on every EMR node by the
bootstrap); build and test tools in requirements-dev.txt; exact versions of everything in
requirements.lock.
"""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [
    line.strip() for line in (here / "requirements.txt").read_text().splitlines() if line.strip() and not line.startswith("#")
]

setup(
    name="image-tagger",
    version="0.1.0",
    description="Spark batch image tagging with a CNN, for hundreds of millions of product images",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["jobs", "jobs.*", "model", "model.*"]),
    package_data={"model": ["imagenet_classes.txt"]},
    install_requires=requirements,
    license="Apache-2.0",
)
