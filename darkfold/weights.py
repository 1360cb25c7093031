"""Read and write Darknet .weights files.

The file is a header followed by each layer's float32 arrays, in cfg order,
with nothing between them and nothing after them (Darknet's load_weights_upto
and save_weights_upto in parser.c). The reader memory-maps the file and walks
it with one offset, checking before every layer that its bytes are there, so a
file that does not match its cfg fails with the layer and the byte counts.
"""

import os
from dataclasses import dataclass

import numpy as np

from .errors import WeightsError
from .files import check_readable, reason

_FLOAT = np.dtype("<f4")
_MAX_VERSION = 65535  # generous: real files say 0.1.0, 0.2.0 or 0.2.5 (transposed: > 1000)


@dataclass(frozen=True)
class Header:
    major: int
    minor: int
    revision: int
    seen: int  # images seen in training

    @property
    def seen_is_64bit(self):
        # parser.c: `seen` became uint64 at version 0.2.
        return self.major * 10 + self.minor >= 2

    @property
    def size(self):
        return 12 + (8 if self.seen_is_64bit else 4)

    @property
    def transposed(self):
        """Old files store connected weights as inputs x outputs."""
        return self.major > 1000 or self.minor > 1000

    def to_bytes(self):
        version = np.array([self.major, self.minor, self.revision], dtype="<i4").tobytes()
        seen = np.array([self.seen], dtype="<u8" if self.seen_is_64bit else "<u4").tobytes()
        return version + seen

    def __str__(self):
        return f"version {self.major}.{self.minor}.{self.revision}, seen {self.seen} images"


def read_header(data, path):
    """Parse the header at the start of ``data`` (a uint8 array)."""
    if len(data) < 16:
        raise WeightsError(f"{path}: {len(data)} bytes is too short for a Darknet weights header (16 or 20 bytes)",
                           path=path, expected="at least 16 bytes", found=len(data))
    major, minor, revision = (int(v) for v in data[:12].view("<i4"))
    if _looks_like_text(data[:64]):
        raise WeightsError(f"{path}: this is a text file, not Darknet weights; is it the .cfg given in place of "
                           "the .weights?", path=path, expected="binary weights", found="text")
    if not all(0 <= v <= _MAX_VERSION for v in (major, minor, revision)):
        raise WeightsError(
            f"{path}: bad header: version {major}.{minor}.{revision} is not a Darknet weights version "
            "(expected small non-negative numbers such as 0.2.0); not a Darknet .weights file?",
            path=path, expected="a version such as 0.2.0", found=f"{major}.{minor}.{revision}",
        )
    header = Header(major, minor, revision, 0)
    if len(data) < header.size:
        raise WeightsError(f"{path}: {len(data)} bytes is too short for the {header.size}-byte header of version "
                           f"{major}.{minor}", path=path, expected=header.size, found=len(data))
    seen_type = "<u8" if header.seen_is_64bit else "<u4"
    seen = int(data[12 : header.size].view(seen_type)[0])
    return Header(major, minor, revision, seen)


def _looks_like_text(head):
    text = bytes(head)
    return bool(text) and all(32 <= b < 127 or b in b"\t\r\n" for b in text)


def read_weights(path, layers, partial=False):
    """Read the parameters of ``layers`` from the weights file at ``path``.

    Returns ``(header, params)``: ``params[i]`` is a dict from array name to a
    read-only float32 array (a view into one buffer holding the file) for every
    layer that stores parameters, else ``{}``. With ``partial=True`` a file
    that ends at a layer boundary (a backbone such as ``darknet53.conv.74``)
    is accepted and the layers past its end get ``None``.
    """
    check_readable(path, "weights")
    data = _read(path)
    header = read_header(data, path)
    params = []
    offset = header.size
    for layer in layers:
        needed = 4 * layer.param_count
        if needed and offset == len(data) and partial:
            params.extend(None for _ in layers[len(params):])
            break
        if offset + needed > len(data):
            raise WeightsError(_short_file_message(path, layers, layer, offset, len(data), header), path=path,
                               layer=layer.index, expected=expected_size(layers, header), found=len(data))
        params.append(_layer_arrays(data, offset, layer, header))
        offset += needed
    if offset != len(data):
        last = _last_with_params(layers)
        raise WeightsError(_long_file_message(path, layers, offset, len(data), header), path=path,
                           layer=last.index, expected=offset, found=len(data))
    return header, params


def _read(path):
    """The file's bytes as a read-only uint8 array.

    Read, not memory-mapped: Darknet rewrites ``*_last.weights`` in place while
    it trains, and a mapped file that shrinks kills the process with SIGBUS at
    the next access to a lost page, long after loading. A copy costs one read
    of the file (a few ms for yolov3-tiny's 35 MB) and can change under no one.
    """
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                raise WeightsError(f"{path}: the weights file is empty", path=path, expected="a weights file",
                                   found="0 bytes")
            data = np.empty(size, np.uint8)
            view, done = memoryview(data), 0
            while done < size:
                count = file.readinto(view[done:])
                if not count:
                    break
                done += count
            grown = file.read(1)
    except OSError as error:
        raise WeightsError(f"{path}: cannot read weights file: {reason(error)}", path=path,
                           found=reason(error)) from None
    if done != size or grown:
        raise WeightsError(f"{path}: the file changed size while it was read ({size} bytes at the start, "
                           f"{'more' if grown else done} at the end): is a training run still writing it? Load a "
                           "copy, or wait until it is written", path=path, expected=f"{size} bytes",
                           found=f"{'more' if grown else done} bytes")
    data.flags.writeable = False
    return data


def _layer_arrays(data, offset, layer, header):
    arrays = {}
    for param in layer.params:
        end = offset + 4 * param.size
        array = data[offset:end].view(_FLOAT)
        if _stored_transposed(layer, param, header):
            array = array.reshape(param.shape[::-1]).T
        arrays[param.name] = array.reshape(param.shape)
        offset = end
    return arrays


def _stored_transposed(layer, param, header):
    # load_connected_weights: old files hold connected weights as inputs x outputs.
    return header.transposed and layer.type == "connected" and param.name == "weights"


def expected_size(layers, header):
    return header.size + 4 * sum(layer.param_count for layer in layers)


def _short_file_message(path, layers, layer, offset, actual, header):
    expected = expected_size(layers, header)
    where = f"layer {layer.index} [{layer.type}] ({layer.where}) needs {4 * layer.param_count} bytes from offset {offset}"
    if offset == actual:
        earlier = [l for l in layers[: layer.index] if l.params]
        return (
            f"{path}: the file ends after layer {layer.index - 1}, but {where}: expected {expected} bytes, "
            f"file has {actual}. It holds complete weights for the first {len(earlier)} layers with "
            f"parameters. " + (_likely_cause(layers, actual, header) or
                               "A partial backbone file (such as darknet53.conv.74) can be loaded with "
                               "partial=True (--partial); otherwise the download was cut short.")
        )
    return (
        f"{path}: truncated: {where}, but only {actual - offset} remain: expected {expected} bytes, "
        f"file has {actual} ({expected - actual} missing). "
        + (_likely_cause(layers, actual, header) or "A truncated download, or weights for a different cfg.")
    )


def _long_file_message(path, layers, offset, actual, header):
    last = _last_with_params(layers)
    return (
        f"{path}: {actual - offset} bytes left over after the last layer with parameters "
        f"(layer {last.index} [{last.type}], {last.where}): this cfg needs {offset} bytes, file has "
        f"{actual}. "
        + (_likely_cause(layers, actual, header) or "The weights were made for a different cfg (other filters or classes?).")
    )


def _last_with_params(layers):
    return max((l for l in layers if l.params), key=lambda l: l.index, default=layers[-1])


def _likely_cause(layers, actual, header):
    """A sentence naming the cfg change the file size points to, or ''."""
    return (_seen_hint(layers, actual, header) or _folding_hint(layers, actual, header)
            or _classes_hint(layers, actual, header))


def _seen_hint(layers, actual, header):
    """Recognise a header whose `seen` has the other width than its version says.

    Darknet reads `seen` as 64 bits from version 0.2 on, as 32 bits before; a
    writer that gets this wrong shifts every array by 4 bytes, and the file
    is exactly 4 bytes too short or too long.
    """
    surplus = actual - expected_size(layers, header)
    version = f"{header.major}.{header.minor}"
    # A 32-bit `seen` read as 64 bits takes the first float as its high half:
    # no real count of training images reaches 2**32.
    if surplus == -4 and header.seen_is_64bit and header.seen >= 2**32:
        return (f"That is exactly the 4 bytes between a 32-bit and a 64-bit `seen`: the header says version "
                f"{version}, so `seen` is read as 64 bits, but the file was written with a 32-bit `seen` and every "
                "array is shifted by 4 bytes. Set the minor version (bytes 4-7) to 1, or write the file again "
                "with a 64-bit `seen`.")
    if surplus == 4 and not header.seen_is_64bit:
        return (f"That is exactly the 4 bytes between a 32-bit and a 64-bit `seen`: the header says version "
                f"{version}, so `seen` is read as 32 bits, but the file was written with a 64-bit `seen` and every "
                "array is shifted by 4 bytes. Set the minor version (bytes 4-7) to 2.")
    return ""


def _folding_hint(layers, actual, header):
    """Recognise folded weights given with an unfolded cfg, and the reverse.

    Folding drops scales, rolling_mean and rolling_variance: 12 bytes per
    filter of each batch_normalize=1 layer.
    """
    surplus = actual - expected_size(layers, header)
    with_batchnorm = [l for l in layers if any(p.name == "rolling_mean" for p in l.params)]
    if with_batchnorm and surplus == -12 * sum(l.params[0].size for l in with_batchnorm):
        return ("The file is exactly the size of this model with its BatchNorm folded: these are folded "
                "weights (darkfold convert); use them with the folded cfg, which says batch_normalize=0.")
    heads = {source for l in layers if l.is_head for source in l.inputs}
    foldable = [l for l in layers if l.type == "convolutional" and not l.batch_normalize and l.index not in heads]
    if foldable and surplus == 12 * sum(l.filters for l in foldable):
        return ("The file is exactly the size of this model with BatchNorm in every convolution before the "
                "heads: these look like unfolded weights; use them with the original cfg (batch_normalize=1).")
    return ""


def _classes_hint(layers, actual, header):
    """Name the classes= the file would fit, when only the heads' size differs.

    The [convolutional] before each [yolo]/[region] layer has filters =
    boxes * (classes + values per box); the file size is linear in classes.
    """
    # A [detection] head (YOLOv1) has boxes * (coords + 1) + classes values per cell: its
    # size grows by one filter per class, not by one per box.
    heads = [l for l in layers if l.is_head and l.type != "detection"]
    convs = [layers[i] for h in heads for i in h.inputs if layers[i].type == "convolutional"]
    if not heads or len(convs) != len(heads):
        return ""
    classes = heads[0].classes
    if any(h.classes != classes for h in heads):
        return ""
    per_class = 0
    for head, conv in zip(heads, convs):
        per_filter = conv.param_count // conv.filters
        per_class += 4 * head.boxes * per_filter
    surplus = actual - expected_size(layers, header)
    if surplus % per_class:
        return ""
    fit = classes + surplus // per_class
    if fit < 1 or fit == classes:
        return ""
    return (f"The file fits this cfg with classes={fit} instead of {classes} in every "
            f"[{heads[0].type}] layer (and filters to match in the layer before each).")


def write_weights(path, header, layers, params):
    """Write ``header`` and ``params`` (as read by read_weights) to ``path``.

    Layers whose params are ``None`` (past the end of a partial file) are left
    out, as Darknet's save_weights_upto does.
    """
    with open(path, "wb") as file:
        file.write(header.to_bytes())
        for layer, arrays in zip(layers, params):
            if arrays is None:
                break
            for param in layer.params:
                array = arrays[param.name]
                if _stored_transposed(layer, param, header):
                    array = array.T
                file.write(np.ascontiguousarray(array, dtype=_FLOAT).data)
