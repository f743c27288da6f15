"""Where the benchmarks' full data sets live, and a clear stop when one is absent.

The data sets are not in the repository (tests use the small subsets in tests/fixtures). A folder
holding `nab/`, `lanl/`, `alibaba-openb/` and `asd/` (layout: README "Benchmarks") is looked for at
$DSPEX_SHARED_DATA, else at `../shared/data` beside the repository.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA_ENV = "DSPEX_SHARED_DATA"
# the exit status `make bench` reads as "skipped: data set absent"
MISSING_DATA_EXIT = 3


def data_root() -> Path:
    """$DSPEX_SHARED_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get(DATA_ENV, REPO.parent / "shared" / "data"))


def require(subdir: str, root: Path | None = None) -> Path:
    """The folder `subdir` under `root` (default data_root()); exit with a hint if absent."""
    base = data_root() if root is None else root
    path = base / subdir
    if not path.is_dir():
        print(
            f"{Path(sys.argv[0]).name}: data set '{subdir}' not found at {path}.\n"
            f"  Put the full data sets in one folder with subfolders nab/, lanl/, alibaba-openb/, "
            f"asd/ (see README, Benchmarks) and set {DATA_ENV}=/that/folder, or place it at "
            f"{REPO.parent / 'shared' / 'data'}.",
            file=sys.stderr,
        )
        raise SystemExit(MISSING_DATA_EXIT)
    return path
