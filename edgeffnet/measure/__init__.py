"""Measuring bundles: the timing loop, statistics, records, bench, sweep and report."""
