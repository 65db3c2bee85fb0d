"""What a node's storage folder holds: series and their routing, deliveries, quarantined instances.

Example:
    >>> from deepmia.pacs.status import node_status   # doctest: +SKIP
    >>> node_status("pacs-storage")["deliveries"]      # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from deepmia.errors import InvalidArgumentError

from .jobs import Outbox
from .store import Storage

__all__ = ["node_status"]


def node_status(storage: str | os.PathLike[str]) -> dict[str, Any]:
    """Counts and details of a node's storage folder (read only).

    Returns:
        ``series`` (routed / unrouted / waiting counts), ``deliveries`` (counts by status and the entries not
        yet sent), ``quarantine`` (each refused instance with its reason).

    Raises:
        InvalidArgumentError: The folder is not a node's storage folder.
    """
    root = Path(storage)
    if not (root / "incoming").is_dir():
        raise InvalidArgumentError("not a PACS node's storage folder (no incoming/)", path=root,
                                   fix="give the 'storage' of the node's configuration; it is made at first start")
    store = Storage(root)
    states: Counter[str] = Counter()
    for folder in store.incoming.glob("*/*"):
        marker = store.routing / f"{folder.name}.json"
        states[json.loads(marker.read_text(encoding="utf-8"))["status"] if marker.is_file() else "waiting"] += 1
    deliveries = Outbox(store.outbox).all()
    now = time.time()
    open_ = [{"job": d.job, "destination": d.destination, "status": d.status, "attempts": d.attempts,
              "error": d.error, "next_try_in_s": round(max(0.0, d.next_try - now), 1) if d.status == "queued" else None}
             for d in deliveries if d.status != "sent"]
    return {
        "storage": str(root.resolve()),
        "series": {k: states.get(k, 0) for k in ("routed", "unrouted", "waiting")},
        "deliveries": {"counts": {k: sum(d.status == k for d in deliveries) for k in ("queued", "sent", "failed")},
                       "not_sent": open_},
        "quarantine": [{"file": q["file"], "reason": q["reason"], "calling_ae": q.get("calling_ae"),
                        "received": q.get("received")} for q in store.quarantined()],
    }
