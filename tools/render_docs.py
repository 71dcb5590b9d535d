"""Regenerate every table marked in README.md, data/ and docs/, and the figures under docs/figures/, from the
CSVs under docs/results/.

    python tools/render_docs.py            # rewrite the marked blocks and draw the figures
    python tools/render_docs.py --check    # exit 1, naming each doc whose tables differ from their data
"""
from __future__ import annotations

import argparse
import sys

from vlmlab.doctables import REPO, doc_files, render, render_figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; fail if a doc drifted from its data")
    a = ap.parse_args(argv)
    changed = [p for p in doc_files() if p.is_file() and render(p, check=a.check)]
    for p in changed:
        print(f"{'drifted' if a.check else 'rendered'}: {p.relative_to(REPO)}", file=sys.stderr)
    if not a.check:
        for p in render_figures():
            print(f"drawn: {p.relative_to(REPO)}", file=sys.stderr)
    return 1 if a.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
