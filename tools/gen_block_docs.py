"""Rewrite the block table in docs/spec.md ("The block library") from graphc/blocks/*.yaml.

Usage: python tools/gen_block_docs.py   (tests/test_block_library.py fails while it is stale)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graphc.spec import library  # noqa: E402

BEGIN, END = "<!-- block table: tools/gen_block_docs.py -->\n", "<!-- end of block table -->\n"


def main() -> None:
    doc = ROOT / "docs" / "spec.md"
    text = doc.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{doc}: no block table markers ({BEGIN.strip()} ... {END.strip()})")
    doc.write_text(pattern.sub(lambda _: BEGIN + library.markdown() + END, text))
    print(f"wrote {doc.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
