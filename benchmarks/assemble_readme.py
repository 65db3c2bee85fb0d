"""Rebuild benchmarks/README.md from the snippets each benchmark writes to benchmarks/results/<name>.md.

Usage: python benchmarks/assemble_readme.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

INTRO = """# Benchmarks

One script per claim. Each takes `--data` (default `../shared/data`), writes `results/<name>.json` with what it
measured and `results/<name>.md`, the table below. Numbers are from the machine named in each section; ratios are
measured against the named baseline in the same run. Re-run a script, then `python benchmarks/assemble_readme.py`.

| script | claim |
|---|---|
"""


def main() -> None:
    sections, rows = [], []
    for md in sorted((HERE / "results").glob("*.md")):
        name = md.stem
        script = HERE / f"{name}.py"
        doc = ""
        if script.exists():
            first = script.read_text().split('"""')
            doc = first[1].strip().splitlines()[0] if len(first) > 2 else ""
        rows.append(f"| [`{name}.py`]({name}.py) | {doc} |")
        when = ""
        js = md.with_suffix(".json")
        if js.exists():
            data = json.loads(js.read_text())
            for key in ("date", "timestamp", "measured_at"):
                if isinstance(data, dict) and key in data:
                    when = f" (measured {data[key]})"
        sections.append(f"## {name}{when}\n\n{md.read_text().strip()}\n")
    (HERE / "README.md").write_text(INTRO + "\n".join(rows) + "\n\n" + "\n".join(sections))


if __name__ == "__main__":
    main()
