"""``python -m torch_impl.zoo [--output docs/results/zoo.md] [--tables 1 6]``: paper vs ours.

Measures every network of the paper's tables (parameters and MACs, on the meta device: a few
seconds on a CPU), prints the comparison, and writes it as Markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..atomic import remove_stale_temporaries, write_text
from ..cli import exit_on_user_error
from .compare import compare_tables
from .paper import PAPER_TABLES, get_table
from .report import to_markdown, to_text


@exit_on_user_error
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
    if not args.no_write and args.output.is_dir():
        parser.error(f"--output {args.output} is a folder; give the file to write, e.g. {args.output / 'zoo.md'}")
    print(f"measuring {sum(len(t.rows) for t in tables)} rows of {len(tables)} table(s) ...", file=sys.stderr)
    results = compare_tables(tables)
    print(to_text(results), end="")
    if not args.no_write:
        remove_stale_temporaries(args.output.parent, [args.output.name])  # left by a killed earlier write
        write_text(args.output, to_markdown(results))
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
