"""The artifact a build stage hands to the next: shared by the stages and the backends' compile, so it
lives below both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Artifact:
    """What a stage produced: the file the next stage reads (None for a TensorRT engine left pending),
    and its record (files, parity, summary, seconds, cached, key) for the manifest."""

    stage: str
    path: Path | None
    record: dict

    @property
    def key(self) -> str:
        return self.record.get("key", "")
