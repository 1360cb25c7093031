"""Describe a model: Darknet's layer table, and the same facts as a dict for JSON."""

_HEADER = "   layer   filters  size/strd(dil)      input                output"


def _shape(shape):
    return "%4d x%4d x%4d" % tuple(shape)


def _describe(layer):
    """The name and option columns of Darknet's layer table (29 characters)."""
    kind = layer.type
    if kind == "convolutional":
        filters = "%5d/%4d " % (layer.filters, layer.groups) if layer.groups > 1 else "%5d      " % layer.filters
        if layer.stride_x != layer.stride_y:
            kernel = "%2dx%2d/%2dx%2d " % (layer.size, layer.size, layer.stride_x, layer.stride_y)
        elif layer.dilation > 1:
            kernel = "%2d x%2d/%2d(%1d)" % (layer.size, layer.size, layer.stride_x, layer.dilation)
        else:
            kernel = "%2d x%2d/%2d   " % (layer.size, layer.size, layer.stride_x)
        return "conv  " + filters + kernel
    if kind in ("maxpool", "local_avgpool"):
        name = "max" if kind == "maxpool" else "avg"
        if layer.stride_x != layer.stride_y:
            return f"{name:<17s}" + "%2dx%2d/%2dx%2d " % (layer.size, layer.size, layer.stride_x, layer.stride_y)
        return f"{name:<18s}" + "%2dx%2d/%2d   " % (layer.size, layer.size, layer.stride_x)
    if kind == "upsample":
        name = "upsample" if layer.stride > 0 else "downsample"
        return f"{name:<24s}" + "%2dx  " % abs(layer.stride)
    if kind in ("reorg", "reorg3d"):
        return f"{'reorg':<24s}" + "/%2d  " % layer.stride
    if kind == "route" and layer.groups > 1:
        return "route " + " ".join(str(i) for i in layer.sources) + f"  {layer.group_id}/{layer.groups}"
    if kind in ("route", "shortcut", "scale_channels", "sam"):
        return f"{kind} " + " ".join(str(i) for i in layer.sources)
    if kind == "connected":
        return f"{'connected':<17s}" + "%5d" % layer.output.c
    return kind


def layer_table(model):
    """Darknet's layer table for ``model``, as printed when it loads a cfg."""
    lines = [_HEADER]
    for layer in model.layers:
        # A route has no single input; Darknet leaves the column blank.
        source = " " * len(_shape(layer.input)) if layer.type == "route" else _shape(layer.input)
        columns = "%4d %-29s%s -> %s" % (layer.index, _describe(layer), source, _shape(layer.output))
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
