"""Train the built-in product-category head on Fashion-MNIST: tools/category_head.py, run with the job's decode.

    python -m tools.train_category_head [--train-size N] [--cache DIR] [--out DIR] [--reports DIR] ...   (make train-head)

tools/category_head.py does the work (its --help lists every option); its main takes the decode
as a parameter, and this command passes the job's (jobs.decode.prepare), through which its
--pipeline-check runs generated product photos. A dev tool: it lives in tools/, outside the
package that EMR nodes install.
"""

from __future__ import annotations

import sys

from jobs.decode import prepare
from tools import category_head


def main(argv: list[str] | None = None) -> int:
    return category_head.main(argv, prepare=prepare)


if __name__ == "__main__":
    sys.exit(main())
