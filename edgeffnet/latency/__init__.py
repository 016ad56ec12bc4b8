"""A latency model per device: predict a network's latency from its layer table, without building it.

features  the layer groups and the numbers per layer the model reads (from `layers.spec_layers`)
model     the fitted model: its form, non-negative least squares, held-out errors, the versioned file
device    what a model describes (CPU, cores, clocks, runtime and version, target profile) and where it lives
store     the device's measurements: one bounded JSONL under the cache, appended by every measurement
design    the designed set of networks a model is collected from
collect   building and timing the design set (resumable), the one part that needs the build side
"""
