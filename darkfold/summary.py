"""Describe a model: Darknet's layer table, and the same facts as a dict for JSON."""

_HEADER = "   layer   filters  size/strd(dil)      input                output"


def _shape(shape):
    return "%4d x%4d x%4d" % tuple(shape)


def layer_table(model):
    """Darknet's layer table for ``model``, as printed when it loads a cfg."""
    lines = [_HEADER]
    for layer in model.layers:
        # A layer that does not read the one before (a route) has no single input; Darknet
        # leaves the column blank.
        source = _shape(layer.input) if layer.kind.reads_previous else " " * len(_shape(layer.input))
        columns = "%4d %-29s%s -> %s" % (layer.index, layer.kind.describe(layer), source, _shape(layer.output))
        if layer.bflops:
            columns += " %5.3f BF" % layer.bflops
        lines.append(columns)
    lines.append("Total BFLOPS %5.3f" % model.bflops)
    lines.append(f"Parameters {model.param_count:,}")
    if model.has_weights:
        lines.append(f"Weights: {model.header}")
        if model.loaded_layers < len(model.layers):
            loaded = f"layers 0 to {model.loaded_layers - 1}" if model.loaded_layers else "no layer"
            lines.append(f"Partial weights: {loaded} loaded")
    return "\n".join(lines)


def model_summary(model):
    """The facts of ``layer_table`` as plain data (for ``darkfold info --json``)."""
    summary = {
        "layers": [
            {
                "index": layer.index,
                "type": layer.type,
                "input": list(layer.input),
                "output": list(layer.output),
                "bflops": round(layer.bflops, 3),
                "params": layer.param_count,
            }
            for layer in model.layers
        ],
        "bflops": round(model.bflops, 3),
        "params": model.param_count,
    }
    if model.has_weights:
        header = model.header
        summary["weights"] = {"major": header.major, "minor": header.minor, "revision": header.revision,
                              "seen": header.seen, "loaded_layers": model.loaded_layers}
    return summary
