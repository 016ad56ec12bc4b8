"""Extra outputs of an OpenVINO model (RunSettings.outputs): tensors inside the IR added as results
before it is compiled, so they come from exactly the weights, quantization and compiler the bundle ships."""

from __future__ import annotations

from edgeffnet.backends import FEATURES
from edgeffnet.core.errors import UserError


def pooled_input(model):
    """The output the IR's final pooling reads (a FakeQuantize's in an INT8 IR): breadth-first from the
    result, so the classifier's own pooling is found before any squeeze-excitation pool upstream."""
    frontier, seen = [model.get_results()[0].input_value(0)], set()
    while frontier:
        value = frontier.pop(0)
        node = value.get_node()
        if node.get_friendly_name() in seen:
            continue
        seen.add(node.get_friendly_name())
        if node.get_type_name() in ("ReduceMean", "AvgPool", "AdaptiveAvgPool"):
            return node.input_value(0)
        frontier += [node.input_value(i) for i in range(node.get_input_size())]
    raise UserError(
        "the OpenVINO IR has no global average pooling before its classifier: it has no feature "
        "map to expose (a class activation map needs one)"
    )


def add_outputs(model, names: tuple[str, ...]) -> tuple[dict[str, str], dict[str, int]]:
    """Add the named tensors (FEATURES or tensor names of the IR) to the model's outputs, in place.
    Returns the node each name resolved to (its friendly name) and each name's output index."""
    resolved, index = {}, {}
    for name in names:
        existing = next((i for i, o in enumerate(model.outputs) if name in o.get_names()), None)
        if existing is not None:
            resolved[name], index[name] = model.outputs[existing].get_node().get_friendly_name(), existing
            continue
        value = pooled_input(model) if name == FEATURES else name
        try:
            model.add_outputs([value])
        except RuntimeError:
            raise UserError(f"the OpenVINO IR has no tensor {name!r} to expose as an output") from None
        resolved[name] = model.outputs[-1].get_node().input_value(0).get_node().get_friendly_name()
        index[name] = len(model.outputs) - 1
    return resolved, index
