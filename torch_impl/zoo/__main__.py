"""``python -m torch_impl.zoo [--output docs/results/zoo.md] [--tables 1 6]``: paper vs ours.

Measures every network of the paper's tables (parameters and MACs, on the meta device: a few
seconds on a CPU), prints the comparison, and writes it as Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from .compare import compare_row
from .paper import PAPER_TABLES, get_table
from .report import to_markdown, to_text


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m torch_impl.zoo",
        description="Paper vs ours: parameters and FLOPs of every network in the paper's tables.",
    )
    parser.add_argument("--output", type=Path, default=Path("docs/results/zoo.md"), help="Markdown file to write")
    parser.add_argument("--tables", type=int, nargs="+", metavar="N", help="only these tables (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print only, write no file")
    args = parser.parse_args(argv)
    try:
        tables = PAPER_TABLES if args.tables is None else tuple(get_table(n) for n in args.tables)
    except ValueError as e:
        parser.error(str(e))
    rows = [(t, r) for t in tables for r in t.rows]
    results = [compare_row(t, r) for t, r in tqdm(rows, desc="measuring", unit="row", file=sys.stderr)]
    print(to_text(results), end="")
    if not args.no_write:
        write_atomically(args.output, to_markdown(results))
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
