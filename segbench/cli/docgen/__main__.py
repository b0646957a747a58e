"""``python -m segbench.cli.docgen [--check]``: write the generated docs pages, or check them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segbench.cli.docgen import REGENERATE, differences, generate, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__)
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="the docs folder (default: docs)")
    parser.add_argument(
        "--reports", type=Path, default=Path("reports"), help="committed runs (default: reports)"
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page differs")
    args = parser.parse_args(argv)
    pages = generate(args.reports)
    if args.check:
        found = differences(pages, args.docs)
        for line in found:
            print(f"{args.docs / line}", file=sys.stderr)
        if found:
            print(f"the generated docs pages are out of date: run {REGENERATE}", file=sys.stderr)
        return 1 if found else 0
    for path in write(pages, args.docs):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
