"""Entry point: spark-submit jobs/tag_images.py --manifest URI --output URI [--profile P] [--set k=v]"""

import sys
from pathlib import Path

# spark-submit puts this script's folder first on sys.path; drop it so our module names
# (config, fetch, ...) cannot shadow other packages, and make the repo root importable.
_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
sys.path.insert(0, str(_here.parent))

from jobs.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
