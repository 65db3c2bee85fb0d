"""Viewer speed: a 512x512x300 CT opens in the web viewer (navigation -> first image drawn) in headless chromium.

The measurement is the browser test ``tests/service/test_viewer_browser.py -k 512x512x300`` (it starts
``deepmia serve``, uploads the CT made from ../shared/data/ct_mr_examples and opens it three times); run from here
(``DEEPMIA_RECORD_BENCHMARK=viewer_open``) the test writes results/viewer_open.json and results/viewer_open.md.
This script runs it, then rebuilds benchmarks/README.md.

Usage: python benchmarks/viewer_open.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Run the browser test that measures the open, then assemble the README table."""
    test = "tests/service/test_viewer_browser.py"
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", test,
                            "-k", "512x512x300"], cwd=HERE.parent,
                           env={**os.environ, "DEEPMIA_RECORD_BENCHMARK": "viewer_open"})
    subprocess.check_call([sys.executable, str(HERE / "assemble_readme.py")])
    return code


if __name__ == "__main__":
    raise SystemExit(main())
