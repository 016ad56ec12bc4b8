"""The roofline's memory ceiling: a streaming kernel over buffers beyond the last-level cache, best of N."""

from __future__ import annotations

import pytest

from edgeffnet.measure import bandwidth


def test_a_stream_records_its_method_size_and_rate():
    r = bandwidth.stream("copy", buffer_bytes=8 << 20, passes=2)
    assert r["gbs"] > 0 and r["buffer_bytes"] == 8 << 20 and r["bytes_per_pass"] == 2 * (8 << 20)
    assert "copy" in r["method"] and "best of 2" in r["method"]
    t = bandwidth.stream("triad", buffer_bytes=8 << 20, passes=2)
    assert t["bytes_per_pass"] == 5 * (8 << 20) and t["gbs"] > 0
    with pytest.raises(ValueError):
        bandwidth.stream("scale")


def test_the_default_buffer_is_well_beyond_the_llc():
    llc, source = bandwidth.llc_bytes()
    size = min(bandwidth.MAX_BUFFER, max(bandwidth.MIN_BUFFER, 4 * (llc or 0)))
    assert size >= bandwidth.MIN_BUFFER and (llc is None or size >= min(4 * llc, bandwidth.MAX_BUFFER))
    assert source
