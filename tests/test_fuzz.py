"""Fuzzing (hypothesis): mutated cfgs, broken weights, convert, the forward pass and the
commands end in a DarkfoldError (exit 2) or succeed.

Never a bare IndexError, ValueError, MemoryError or crash: anything that is
not a DarkfoldError fails the test, and hypothesis shrinks it to the smallest
input that shows it. Each of the eight targets runs 1000 examples,
derandomized (the same examples on every run, so CI is reproducible) and
without deadline (a shared CI machine stalls now and then); about 30 s in all
on the project's 2-vCPU machine. To hunt further, raise max_examples and drop
derandomize locally.
"""

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import darkfold
from darkfold.cfg import Cfg
from darkfold.cli import main
from darkfold.layers import TYPES, build_layers
from darkfold.runtime import release
from darkfold.summary import layer_table, model_summary
from darkfold.verify import sample_input
from darkfold.weights import Header

FUZZ = settings(max_examples=1000, derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])

# Small cfgs that between them use every layer type darkfold reads, so that
# mutations reach every parse function; and the bundled YOLOv3-tiny.
HEAD = """[net]
width=16
height=16
channels=3
"""
YOLO = HEAD + """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=8
size=1
groups=2
activation=mish

[shortcut]
from=-2
activation=linear

[route]
layers=-1,-3
groups=2
group_id=1

[upsample]
stride=2

[reorg]
stride=2

[convolutional]
batch_normalize=1
filters=18
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=1,2, 3,4, 5,6
classes=1
num=3
scale_x_y=1.05
"""
REGION = HEAD + """
[convolutional]
filters=4
size=3
pad=1
activation=linear

[batchnorm]

[local_avgpool]
size=2
stride=2

[convolutional]
filters=4
size=1
activation=logistic

[avgpool]

[scale_channels]
from=-3

[sam]
from=-1

[local]
filters=2
size=3
stride=1
pad=1
activation=relu

[dropout]
probability=.5

[convolutional]
filters=12
size=1
activation=linear

[region]
anchors=1,1, 2,2
classes=1
coords=4
num=2
softmax=1
"""
CLASSIFIER = HEAD + """
[convolutional]
batch_normalize=1
filters=4
size=3
stride=2
pad=1
activation=swish

[maxpool]
size=3
stride=2
padding=1

[connected]
output=10
batch_normalize=1
activation=relu

[softmax]
groups=1

[cost]
type=sse
"""
BASES = [YOLO, REGION, CLASSIFIER, Path(darkfold.DEFAULT_CFG).read_text()]

KEYS = sorted({"filters", "size", "stride", "pad", "padding", "groups", "group_id", "layers", "from", "activation",
               "batch_normalize", "mask", "anchors", "classes", "num", "coords", "width", "height", "channels",
               "inputs", "output", "dilation", "stride_x", "stride_y", "reverse", "scale_x_y", "new_coords",
               "weights_type", "weights_normalization", "side", "scale_wh", "xnor", "probability", "type"})
SECTION_NAMES = {name for kind in TYPES.values() for name in kind.section_names}
SECTIONS = sorted(SECTION_NAMES | {"net", "network", "lstm", "crop", "convolution", "", "yolo]", "[net"})
VALUES = st.one_of(
    st.integers(-(2**33), 2**33).map(str),
    st.integers(-3, 40).map(str),
    st.sampled_from(["", " ", "0", "-1", "1e999", "nan", "inf", "leaky", "linear", "logistic", "1,2", "-1,-2",
                     "2147483647", "2147483648", "9" * 5000, "0" * 4400 + "7", "1.5", "0x10", "\u0661\u0662", "#",
                     "1,,2", "per_channel", "softmax", "1e-45", "-0", "+3", "3 # comment", "1,2,3,4,5,6"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
LINES = st.one_of(
    st.builds("{}={}".format, st.sampled_from(KEYS), VALUES),
    st.sampled_from(SECTIONS).map("[{}]".format),
    st.text(max_size=20),
    st.sampled_from(["", "# comment", "; comment", "\r", "key", "=1", "[", "]", "\x00", "\ufeff[net]"]),
)
# One edit of a cfg's lines; indices are taken modulo the number of lines.
EDITS = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 10**6)),
    st.tuples(st.just("duplicate"), st.integers(0, 10**6)),
    st.tuples(st.just("swap"), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.just("value"), st.integers(0, 10**6), VALUES),
    st.tuples(st.just("insert"), st.integers(0, 10**6), LINES),
    st.tuples(st.just("char"), st.integers(0, 10**6), st.integers(0, 100), st.characters()),
    st.tuples(st.just("crlf")),
    st.tuples(st.just("cut"), st.integers(0, 10**6)),
)


def apply_edits(text, edits):
    lines = text.split("\n")
    for edit in edits:
        kind, *args = edit
        at = args[0] % len(lines) if args and lines else 0
        if kind == "delete" and lines:
            del lines[at]
        elif kind == "duplicate" and lines:
            lines.insert(at, lines[at])
        elif kind == "swap" and lines:
            other = args[1] % len(lines)
            lines[at], lines[other] = lines[other], lines[at]
        elif kind == "value" and lines:
            key, equals, _ = lines[at].partition("=")
            lines[at] = f"{key}={args[1]}" if equals else f"{lines[at]}={args[1]}"
        elif kind == "insert":
            lines.insert(at, args[1])
        elif kind == "char" and lines:
            line = lines[at]
            position = args[1] % (len(line) + 1)
            lines[at] = line[:position] + args[2] + line[position + 1:]
        elif kind == "crlf":
            lines = [line + "\r" for line in lines]
        elif kind == "cut":
            lines = lines[:at]
    return "\n".join(lines)


CFGS = st.builds(apply_edits, st.sampled_from(BASES), st.lists(EDITS, min_size=1, max_size=4))
# For convert: the small models (weights small enough to write each time), fewer edits, so
# that most cfgs still parse and the fold itself runs.
SMALL_CFGS = st.builds(apply_edits, st.sampled_from(BASES[:3]), st.lists(EDITS, max_size=2))


def weights_for(cfg_text, seed=0):
    """A weights file that fits ``cfg_text``, or None when it does not parse or is too big to write."""
    try:
        _, layers, _ = build_layers(Cfg(cfg_text))
    except darkfold.DarkfoldError:
        return None
    count = sum(layer.param_count for layer in layers)
    if count > 2_000_000:
        return None
    rng = np.random.default_rng(seed)
    # Variances in [0.5, 1.5): the fold divides by their square root.
    values = (rng.random(count, dtype=np.float32) + np.float32(0.5))
    return Header(0, 2, 0, 12345).to_bytes() + values.tobytes()


class Scratch:
    """Unique file names in one folder, so no file is rewritten while a model still maps it."""

    def __init__(self, folder):
        self.folder = folder
        self.counter = itertools.count()

    def write(self, suffix, data):
        path = self.folder / f"f{next(self.counter)}{suffix}"
        path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
        return path

    def listing(self):
        return sorted(os.listdir(self.folder))

    def files(self):
        """Each name in the folder, with its bytes (None for a folder)."""
        return {name: None if (self.folder / name).is_dir() else (self.folder / name).read_bytes()
                for name in self.listing()}

    def clear(self):
        for name in self.listing():
            os.unlink(self.folder / name)


@pytest.fixture
def scratch(tmp_path):
    return Scratch(tmp_path)


def check_model(model):
    """What a loaded model promises: shapes, and what `darkfold info` prints from it."""
    for layer in model.layers:
        assert min(layer.output) >= 1
    for layer, arrays in zip(model.layers, model.params):
        if arrays is not None:
            assert [arrays[p.name].shape for p in layer.params] == [p.shape for p in layer.params]
    layer_table(model)
    model_summary(model)


# --------------------------------------------------------------------------------------------
# target 1: cfg text


@FUZZ
@given(text=CFGS)
def test_fuzzed_cfg_loads_or_raises_a_darkfold_error(scratch, text):
    path = scratch.write(".cfg", text)
    try:
        model = darkfold.load(path)
    except darkfold.DarkfoldError as error:
        assert str(error).startswith(str(path)), str(error)
    else:
        check_model(model)
    finally:
        scratch.clear()


# --------------------------------------------------------------------------------------------
# target 2: weights files, truncated, extended, with random headers, for a fixed cfg

INT32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-2, 1003))
WEIGHT_EDITS = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("extend"), st.binary(max_size=40)),
    st.tuples(st.just("header"), st.integers(0, 2), INT32),
    st.tuples(st.just("seen32"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("seen64"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("byte"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("random"), st.binary(max_size=64)),
)


def apply_weight_edits(data, edits):
    for kind, *args in edits:
        if kind == "truncate":
            data = data[: args[0] % (len(data) + 1)]
        elif kind == "extend":
            data += args[0]
        elif kind == "header" and len(data) >= 12:
            at = 4 * args[0]
            data = data[:at] + np.array([args[1]], "<i4").tobytes() + data[at + 4:]
        elif kind == "seen32":  # a 4-byte seen where the version may promise 8, and the reverse
            data = data[:12] + np.array([args[0]], "<u4").tobytes() + data[20:]
        elif kind == "seen64":
            data = data[:12] + np.array([args[0]], "<u8").tobytes() + data[16:]
        elif kind == "byte" and data:
            at = args[0] % len(data)
            data = data[:at] + bytes([args[1]]) + data[at + 1:]
        elif kind == "random":
            data = args[0]
    return data


GOOD = {name: weights_for(text) for name, text in [("yolo", YOLO), ("region", REGION), ("classifier", CLASSIFIER)]}
TEXTS = {"yolo": YOLO, "region": REGION, "classifier": CLASSIFIER}


@FUZZ
@given(name=st.sampled_from(sorted(GOOD)), edits=st.lists(WEIGHT_EDITS, min_size=1, max_size=3),
       partial=st.booleans())
def test_fuzzed_weights_load_or_raise_a_darkfold_error(scratch, name, edits, partial):
    cfg = scratch.write(".cfg", TEXTS[name])
    weights = scratch.write(".weights", apply_weight_edits(GOOD[name], edits))
    try:
        model = darkfold.load(cfg, weights, partial=partial)
    except darkfold.DarkfoldError as error:
        assert str(error).startswith(str(weights)), str(error)
    else:
        check_model(model)
        assert model.header.size + 4 * sum(
            layer.param_count for layer, arrays in zip(model.layers, model.params) if arrays is not None
        ) == weights.stat().st_size
    finally:
        scratch.clear()


# --------------------------------------------------------------------------------------------
# target 3: convert, from fuzzed cfgs with weights that fit them (so the fold runs) or not


@FUZZ
@given(text=SMALL_CFGS, weight_edits=st.lists(WEIGHT_EDITS, max_size=1), force=st.booleans(),
       outputs=st.sampled_from(["new", "existing", "cfg is the input", "weights is the input", "same path"]))
def test_fuzzed_convert_writes_both_outputs_or_raises_and_writes_nothing(scratch, text, weight_edits, force,
                                                                         outputs):
    data = weights_for(text)
    assume(data is not None or weight_edits)  # a cfg that does not parse needs no weights to fail
    cfg = scratch.write(".cfg", text)
    weights = scratch.write(".weights", apply_weight_edits(data or b"", weight_edits))
    out_cfg, out_weights = scratch.folder / "out.cfg", scratch.folder / "out.weights"
    if outputs == "existing":
        out_cfg.write_text("old")
    elif outputs == "cfg is the input":
        out_cfg = cfg
    elif outputs == "weights is the input":
        out_weights = weights
    elif outputs == "same path":
        out_weights = out_cfg
    before = scratch.files()
    try:
        folded = darkfold.convert(cfg, weights, out_cfg, out_weights, force=force)
    except darkfold.DarkfoldError:
        assert scratch.files() == before  # inputs untouched, no output, no temporary file
    else:
        assert outputs in ("new", "existing") and (force or outputs == "new")
        assert not any(getattr(layer, "batch_normalize", 0) for layer in folded.layers)
        check_model(darkfold.load(out_cfg, out_weights))
        assert cfg.read_bytes() == before[cfg.name] and weights.read_bytes() == before[weights.name]
    finally:
        scratch.clear()


# --------------------------------------------------------------------------------------------
# target 4: the `darkfold info` command: exit 0 with a table, or 2 with one error line; never 1


@FUZZ
@given(text=CFGS, weights=st.sampled_from(["none", "fitting", "random"]), noise=st.binary(max_size=64),
       as_json=st.booleans())
def test_fuzzed_info_exits_0_or_2_and_never_reports_a_bug(scratch, capsys, text, weights, noise, as_json):
    cfg = scratch.write(".cfg", text)
    argv = ["info", str(cfg)]
    if weights == "fitting":
        data = weights_for(text)
        argv.append(str(scratch.write(".weights", data if data is not None else noise)))
    elif weights == "random":
        argv.append(str(scratch.write(".weights", noise)))
    try:
        code = main(argv + (["--json"] if as_json else []))
        out, err = capsys.readouterr()
    finally:
        scratch.clear()
    assert code in (0, 2), err
    if code == 2:
        *warnings, error = err.splitlines()
        assert out == "" and error.startswith(("darkfold: error: " + argv[1], "darkfold: error: " + argv[-1]))
        assert all(line.startswith("darkfold: warning: ") for line in warnings)
    else:
        assert out


# --------------------------------------------------------------------------------------------
# target 5: any bytes at all as a cfg


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_random_bytes_as_a_cfg_load_or_raise_a_darkfold_error(scratch, data):
    path = scratch.write(".cfg", data)
    try:
        check_model(darkfold.load(path))
    except darkfold.DarkfoldError as error:
        assert str(error).startswith(str(path))
    finally:
        scratch.clear()


# --------------------------------------------------------------------------------------------
# target 6: the forward pass of fuzzed cfgs, with weights that fit: shapes are checked before
# any kernel runs, so a cfg the engine cannot run is a DarkfoldError, never a crash

# The small models without the layers only the loader knows ([local], [cost]).
ENGINE_BASES = [YOLO, REGION.replace("[local]", "[convolutional]"), CLASSIFIER.replace("[cost]\ntype=sse\n", "")]
ENGINE_CFGS = st.builds(apply_edits, st.sampled_from(ENGINE_BASES), st.lists(EDITS, max_size=2))


# All weights in [0.5, 1.5): values grow layer by layer, and may overflow to inf, which is no error.
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@FUZZ
@given(text=ENGINE_CFGS, fold=st.booleans(), threads=st.sampled_from([1, 2]))
def test_fuzzed_cfgs_run_or_raise_a_darkfold_error(scratch, text, fold, threads):
    data = weights_for(text)
    assume(data is not None)
    try:
        model = darkfold.load(scratch.write(".cfg", text), scratch.write(".weights", data))
    except darkfold.DarkfoldError:
        return
    finally:
        scratch.clear()
    try:
        outputs = model.forward(sample_input(model), fold=fold, threads=threads)
    except darkfold.DarkfoldError:
        return
    finally:
        release(model)  # the worker threads of the engines it built
    for index, output in outputs.items():
        w, h, c = model.layers[index].output
        assert output.shape == (1, c, h, w) and output.dtype == np.float32


# --------------------------------------------------------------------------------------------
# target 7: the `darkfold convert` command, which also runs both models to verify the fold:
# exit 0 with both outputs, or 2 with the folder as it was; never 1


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@FUZZ
@given(text=SMALL_CFGS, weight_edits=st.lists(WEIGHT_EDITS, max_size=1))
def test_fuzzed_convert_command_exits_0_with_outputs_or_2_without(scratch, capsys, text, weight_edits):
    data = weights_for(text)
    assume(data is not None)
    cfg = scratch.write(".cfg", text)
    weights = scratch.write(".weights", apply_weight_edits(data, weight_edits))
    out = scratch.folder / "out"
    before = scratch.files()
    try:
        code = main(["convert", str(cfg), str(weights), "-o", str(out), "--threads", "1"])
        _, err = capsys.readouterr()
        assert code in (0, 2), err
        if code == 0:
            assert sorted(os.listdir(out)) == sorted([cfg.stem + "-folded.cfg", weights.stem + "-folded.weights"])
        else:
            assert scratch.files() == before and err.splitlines()[-1].startswith("darkfold: error: ")
    finally:
        if out.exists():
            for name in os.listdir(out):
                os.unlink(out / name)
            out.rmdir()
        scratch.clear()


# --------------------------------------------------------------------------------------------
# target 8: any bytes as an image: read_image and Darknet's preprocessing give an image or an
# ImageError naming the file

_DOG = (Path(__file__).resolve().parent.parent / "data" / "dog.jpg").read_bytes()
_SIGNATURES = [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"BM", b"RIFF\x00\x00\x00\x00WEBP", b""]


def _mutated_dog(cut, flips):
    data = bytearray(_DOG[:cut])
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    return bytes(data)


IMAGE_BYTES = st.one_of(
    st.builds(lambda head, body: head + body, st.sampled_from(_SIGNATURES), st.binary(max_size=400)),
    st.builds(_mutated_dog, st.integers(0, len(_DOG)),
              st.lists(st.tuples(st.integers(0, len(_DOG)), st.integers(0, 255)), max_size=8)),
)


@FUZZ
@given(data=IMAGE_BYTES, suffix=st.sampled_from([".jpg", ".png", ".bmp", ".webp"]), letterbox=st.booleans())
def test_random_bytes_as_an_image_read_or_raise_an_image_error(scratch, data, suffix, letterbox):
    from darkfold import images

    path = scratch.write(suffix, data)
    try:
        image = images.read_image(path)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        x = images.preprocess(image, 32, 24, letterbox=letterbox)
        assert x.shape == (3, 24, 32) and x.dtype == np.float32 and np.isfinite(x).all()
    except darkfold.ImageError as error:
        assert str(error).startswith(str(path))
    finally:
        scratch.clear()
