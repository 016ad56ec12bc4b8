"""What `edgeffnet eval` and `build --val` write into BUNDLE/eval/NAME.json, and the one way it is read back.

The file says `"format": "edgeffnet-eval/1"`. Files written before the tag (the same content, with
`"kind": "edgeffnet eval"` or `"edgeffnet build --val"` and no format) are read as version 0. A report
reads these files tolerantly (a damaged one is left out); `read` refuses one in one line, and the
report skips what it refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict, cast

from edgeffnet.core import formats
from edgeffnet.core.untrusted import UntrustedFileError, check_fields

EVAL_RESULT = formats.Format(
    "eval result", "format", (1,), "evaluate again with edgeffnet eval", tag="edgeffnet-eval", untagged=0
)
KINDS = ("edgeffnet eval", "edgeffnet build --val")  # who wrote it: the command, or a build's --val gate


class EvalResult(TypedDict, total=False):
    """An eval result as written and read back (every key optional on reading: a report takes what it
    finds, and files from before a key was added lack it). The rows (`reference`, `artifacts`) keep eval's layout:
    `name`, `top1` and `topK` ({accuracy, correct, interval}), `top1_drop` ({difference, interval,
    mcnemar_p, ...}), `agreement` ({top1_agreement, topK_overlap, cosine_mean, cosine_min})."""

    format: str
    kind: str
    created: str
    bundle: str
    model: dict  # spec, precision, target, random_weights
    data: dict  # source, layout, count, classes, resolved
    images: int  # the images every model saw (fewer than images_total where interrupted or unreadable)
    images_total: int
    partial: bool  # interrupted: the figures cover the whole batches done
    skipped_unreadable: list[str]
    skipped_count: int
    reference: dict | None  # None: no image could be read
    artifacts: list  # of rows as eval writes them; one from elsewhere may hold anything
    topk: int
    interval_method: str | None
    notes: list[str]


def tagged(kind: str, result: dict) -> EvalResult:
    """`result` as the file says it: the format tag first, then who wrote it, then the figures."""
    return cast(EvalResult, EVAL_RESULT.stamp() | {"kind": kind} | result)


def read(source: str | Path | dict, where: str | None = None) -> EvalResult:
    """An eval result from `source` (a path, read carefully, or a parsed dict), checked: its tag and
    version, and the type of every top-level field; one line otherwise."""
    where = where or (EVAL_RESULT.what if isinstance(source, dict) else f"eval result '{source}'")
    d, version = formats.load(EVAL_RESULT, source, where)
    if version == 0 and d.get("kind") not in KINDS:
        raise UntrustedFileError(
            f"{where} has neither a format tag nor the kind of an eval result: it is no edgeffnet eval "
            f"result; {EVAL_RESULT.remedy}"
        )
    check_fields(EvalResult, d, where)
    return cast(EvalResult, d)
