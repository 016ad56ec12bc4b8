"""A latency model per device: predict a network's latency from its layer table, without building it.

features  the layer groups and the numbers per layer the model reads (from `layers.spec_layers`)
model     the fitted model: its form, non-negative least squares, held-out errors, the versioned file
device    what a model describes (CPU, cores, clocks, runtime and version, target profile) and where it lives
store     the device's measurements: one bounded JSONL under the cache, appended by every measurement
design    the designed set of networks a model is collected from
use       how search, fit, sweep and the CLI find a device's model and add their measurements to its data

Collecting the design set builds and times networks through the search harness, so it lives above, in
search/latency_collect.py; the commands are cli/latency.py. This package imports only core and specs:
workflows (sweep), search and the CLI import it.
"""
