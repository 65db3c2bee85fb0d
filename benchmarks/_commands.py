"""Running commands from the benchmark scripts: output captured or streamed to a log, timed, failures loud."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["run", "deepmia"]


def run(cmd: list[str], *, log: Path | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command; returns its ``command``, ``rc``, ``seconds`` and ``output`` (stdout + stderr).

    With ``log``, the output goes to that file as it comes (``tail -f`` it during training).
    """
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    if log is None:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        output = proc.stdout + proc.stderr
    else:
        with open(log, "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, env=env)
        output = log.read_text()
    return {"command": " ".join(cmd), "rc": proc.returncode, "seconds": round(time.perf_counter() - t, 1),
            "output": output, "stdout": proc.stdout if log is None else output}


def deepmia(*args: str, log: Path | None = None) -> tuple[float, str]:
    """Run a ``deepmia`` command (the venv's console script); returns seconds and stdout. Fails loudly."""
    r = run([str(Path(sys.executable).with_name("deepmia")), *args], log=log)
    if r["rc"] != 0:
        sys.exit(f"command failed ({r['rc']}): {r['command']}\n{r['output'][-4000:]}")
    return r["seconds"], r["stdout"]
