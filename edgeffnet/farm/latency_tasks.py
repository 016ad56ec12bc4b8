"""What runs on a farm device for `edgeffnet latency fit --cluster`: its own collection, then its own fit.

A latency model describes the device that timed its networks, so everything happens on the device: the
designed networks are built there (through its stage cache), timed there against the reference, and
appended to its own data under its own cache, keyed by its own identity (`latency.device.identity`
evaluated here, not on the workstation). A task cut short (Ctrl-C on the workstation, a time limit, a
lost worker) keeps every network measured before: a rerun skips them (`latency_collect.run` resumes).
The task returns the device's model, all of its rows (the workstation merges them: sending all, not
the new ones, lets a workstation that lost its copy have it again) and what the collection did.
"""

from __future__ import annotations

import time

from edgeffnet.farm import device
from edgeffnet.farm.search_tasks import node_name


def collect_and_fit(collection) -> dict:
    """COLLECTION (a latency_collect.Collection) measured here, resumed where this device left it, and
    fitted. Returns {"node", "identity", "summary", "model" (its dict, or None), "fit_error", "rows"}."""
    from edgeffnet.core.errors import UserError
    from edgeffnet.latency import device as latency_device
    from edgeffnet.latency import store
    from edgeffnet.latency.model import fit
    from edgeffnet.pipeline import require_build_side
    from edgeffnet.search import latency_collect

    require_build_side("latency fit --cluster (each device builds its designed networks)")
    t0 = time.monotonic()
    ident = latency_device.identity(collection.target)
    result = latency_collect.run(collection)
    rows, unreadable = store.read(latency_device.data_path(ident, collection.precision))
    model, why = None, None
    try:
        fitted = fit(rows, collection.precision, ident)
        fitted.save(latency_device.model_path(ident, collection.precision))
        model = fitted.to_dict()
    except UserError as e:  # too few networks (most failed): the data measured still goes back
        why = str(e)
    node = device.node_identity()
    return {
        "node": node | {"name": node_name(node)},
        "identity": ident,
        "summary": {
            "measured": result["measured"],
            "skipped": result["skipped"],
            "failed": [[spec, reason] for spec, reason in result["failed"]],
            "unreadable_rows": unreadable,
            "seconds": round(time.monotonic() - t0, 1),
        },
        "model": model,
        "fit_error": why,
        "rows": rows,
    }
