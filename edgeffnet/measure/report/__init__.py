"""`edgeffnet report`: bench records -> tables (Markdown, CSV, JSON), latency-vs-FLOPs plots, one HTML page.

A row is one bundle on one runtime in one bench mode: latency (batch 1, synchronous) and throughput (the
backend's best) are different measurements, so each gets its own row. A row also says what the bundle
computes: its weights (pretrained, a checkpoint, or seeded random: a latency study) and its fidelity to FP32
(the accuracy drop from `edgeffnet eval` when the bundle has one, else the build's agreement on
verification photos). A series is one family x precision x runtime x device; within it, log(latency) is
fitted against log(FLOPs): a slope of 1 means latency follows FLOPs, below 1 means bigger models use the
device better. Families are fitted apart: Lite and B-series are different networks.

The modules, in the order a report is made:
  inputs      the records: found below the paths given, read carefully, the newest of each kept
  devices     the names a record gets: who measured it, its device, its series
  fidelity    its weights and how closely it follows FP32 (eval's accuracy drop, else the build's agreement)
  state       its start-up, memory and device-state figures, and the spread across rounds
  row         a record as one typed row (ReportRow), with the latency multiplier within its series
  series      per series, the log-log fit against FLOPs and a colour
  plots       the latency- and throughput-against-FLOPs figures
  caveats     the warnings a reader needs before trusting a row
  tables      the tables as text: results, slopes, start-up and state, scaling, machines
  render      those tables as Markdown, HTML and a terminal table
  profile_section  where the time goes, from records that carry a profile (bench --profile)
  files       the report set, written whole into the output directory
"""

from __future__ import annotations

from edgeffnet.measure.report.caveats import overlapping, state_warnings, warnings
from edgeffnet.measure.report.devices import device_of, measured_by, series_of, short_device
from edgeffnet.measure.report.fidelity import (
    SANE_COSINE,
    AccuracyDrop,
    accuracy_drop,
    fidelity_of,
    weights_label,
    weights_of,
)
from edgeffnet.measure.report.files import FILES, PLOTS, write
from edgeffnet.measure.report.inputs import collect
from edgeffnet.measure.report.plots import TICK_MERGE_RATIO, figure, merged_ticks, plot
from edgeffnet.measure.report.render import CSS, console_table
from edgeffnet.measure.report.row import ReportRow, rows
from edgeffnet.measure.report.series import colours, fits
from edgeffnet.measure.report.state import StartAndState, start_and_state
from edgeffnet.measure.report.tables import machines, start_table, tables

__all__ = [
    "CSS",
    "FILES",
    "PLOTS",
    "SANE_COSINE",
    "TICK_MERGE_RATIO",
    "AccuracyDrop",
    "ReportRow",
    "StartAndState",
    "accuracy_drop",
    "collect",
    "colours",
    "console_table",
    "device_of",
    "fidelity_of",
    "figure",
    "fits",
    "machines",
    "measured_by",
    "merged_ticks",
    "overlapping",
    "plot",
    "rows",
    "series_of",
    "short_device",
    "start_and_state",
    "start_table",
    "state_warnings",
    "tables",
    "warnings",
    "weights_label",
    "weights_of",
    "write",
]
