"""The feature dictionary, generated from the feature registry.

``python -m pipeline.tools.dictionary`` writes ``docs/feature_dictionary.md``: one row
per registered feature with its family, the closure causes it bears on (primary
first), its monotone direction, whether a borrower can act on it, and its Chinese and
English text, followed by the closure causes themselves. ``--check`` writes nothing
and exits with status 1 when the file on disk differs from what the registry gives
now. The model report shows the same rows for the features of its model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.base.causes import ALL_CAUSES, CAUSE_TEXT
from pipeline.base.config import REPO_ROOT
from pipeline.base.io import write_text
from pipeline.base.registry import FAMILIES, FEATURES
from pipeline.core.report import DICTIONARY_COLUMNS, dictionary_rows

DEFAULT_PATH = REPO_ROOT / "docs" / "feature_dictionary.md"

_HEAD = {
    "name": "feature",
    "family": "family",
    "causes": "causes (primary first)",
    "monotone": "monotone",
    "actionable": "actionable",
    "zh": "中文",
    "en": "English",
}


def _md(text: str) -> str:
    """A table cell: pipes escaped, no line breaks."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md(c) for c in cells) + " |"


def markdown() -> str:
    """The whole dictionary as Markdown, from the registry as it is now."""
    rows = dictionary_rows(FEATURES)
    out = [
        "# Feature dictionary",
        "",
        "Generated from the feature registry (`pipeline/base/registry.py`) by",
        "`python -m pipeline.tools.dictionary`; do not edit by hand.",
        "",
        f"{len(rows)} features in {len(FAMILIES)} families ({', '.join(FAMILIES)}).",
        "",
        "- **causes**: the closure causes a feature bears on; the first is its primary cause,",
        "  which receives its whole SHAP value under `explain.attribution=primary`.",
        "- **monotone**: the expected direction, +1 when more of it means more closure risk,",
        "  -1 when less, 0 when unconstrained; the model is trained under these constraints",
        "  (`model.monotone=true`, the default).",
        "- **actionable**: whether a borrower can act on it; advice only changes actionable",
        "  features.",
        "",
        _row([_HEAD[c] for c in DICTIONARY_COLUMNS]),
        _row(["---"] * len(DICTIONARY_COLUMNS)),
        *(_row([f"`{r['name']}`", *(r[c] for c in DICTIONARY_COLUMNS[1:])]) for r in rows),
        "",
        "## Closure causes",
        "",
        _row(["cause", "English", "中文"]),
        _row(["---"] * 3),
        *(_row([f"`{c}`", CAUSE_TEXT[c][1], CAUSE_TEXT[c][0]]) for c in ALL_CAUSES),
        "",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--check", action="store_true", help="compare only; 1 when stale")
    args = parser.parse_args(argv)
    text = markdown()
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.exists() else None
        if current != text:
            print(f"{args.path}: out of date; run python -m pipeline.tools.dictionary")
            return 1
        print(f"{args.path}: up to date")
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    write_text(text, args.path)
    print(f"{args.path}: {len(FEATURES)} features")
    return 0


if __name__ == "__main__":
    sys.exit(main())
