"""The report's "where the time goes" section now lives in the report package
(`edgeffnet.measure.report.profile_section`); this name keeps the imports written against it working."""

from __future__ import annotations

from edgeffnet.measure.report.profile_section import (
    ROLE_COLOURS,
    TOP,
    costliest,
    label,
    profiled,
    role_bars,
    role_flops,
    roofline,
    section,
)

__all__ = ["ROLE_COLOURS", "TOP", "costliest", "label", "profiled", "role_bars", "role_flops", "roofline", "section"]
