"""Train the built-in product-category head on Fashion-MNIST: model/train_head.py, run with the job's decode.

    python -m jobs.train_category_head [--train-size N] [--cache DIR] [--out DIR] [--reports DIR] ...   (make train-head)

model/train_head.py does the work (its --help lists every option). It never imports jobs/, so
the job's decode (jobs.decode.prepare), through which its --pipeline-check runs generated
product photos, is passed in here.
"""

from __future__ import annotations

import sys

from jobs.decode import prepare
from model import train_head


def main(argv: list[str] | None = None) -> int:
    return train_head.main(argv, prepare=prepare)


if __name__ == "__main__":
    sys.exit(main())
