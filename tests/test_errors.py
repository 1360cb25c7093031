"""Every bad input ends in exit 2, one message naming the file, and no output left behind.

``CASES`` is the table of bad inputs across the commands; a new command's bad
inputs (``detect``, next) are one ``Case`` line each. The tests above it
check the error classes and their fields.
"""

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import darkfold
from darkfold.cfg import Cfg
from darkfold.cli import main
from darkfold.errors import (
    CfgError,
    DarkfoldError,
    ImageError,
    ModelError,
    OutputError,
    WeightsError,
)
from darkfold.layers import build_layers
from darkfold.weights import Header

from fixtures import LOCAL, NET, SMALL_YOLO as YOLO

# --------------------------------------------------------------------------------------------
# the error classes


def test_every_error_class_is_a_darkfold_error():
    for cls in (CfgError, WeightsError, ModelError, ImageError, OutputError):
        assert issubclass(cls, DarkfoldError)
    assert darkfold.ModelError is ModelError and darkfold.OutputError is OutputError


def test_fields_default_to_none_and_the_message_is_kept():
    error = DarkfoldError("--partial needs WEIGHTS")
    assert str(error) == "--partial needs WEIGHTS" and error.where is None
    assert (error.path, error.line, error.layer, error.expected, error.found) == (None,) * 5


def test_a_message_that_forgot_its_file_gets_it():
    error = CfgError("expected an integer", path=Path("x.cfg"), line=3, expected="an integer", found="four")
    assert str(error) == "x.cfg:3: expected an integer" and error.where == "x.cfg:3" and error.path == "x.cfg"
    assert str(WeightsError("x.weights: truncated", path="x.weights", layer=4)) == "x.weights: truncated"


def test_fields_survive_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(WeightsError("w: short", path="w", layer=2, expected=10, found=8)))
    assert type(error) is WeightsError and str(error) == "w: short"
    assert (error.path, error.layer, error.expected, error.found) == ("w", 2, 10, 8)


def test_api_errors_carry_file_line_and_layer(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(NET + "[maxpool]\n[convolutional]\nfilters=4\nactivation=leakyy\n")
    with pytest.raises(CfgError) as error:
        darkfold.load(cfg)
    assert (error.value.path, error.value.line, error.value.layer) == (str(cfg), 8, 1)
    assert (error.value.expected, error.value.found) == ("a Darknet activation", "leakyy")
    assert str(error.value).startswith(f"{cfg}:8: unknown activation 'leakyy'")


def test_truncated_weights_error_names_layer_and_byte_counts(tmp_path):
    cfg = write(tmp_path / "m.cfg", YOLO)
    weights = write(tmp_path / "m.weights", weights_for(YOLO)[:-8])
    with pytest.raises(WeightsError) as error:
        darkfold.load(cfg, weights)
    assert (error.value.path, error.value.layer, error.value.line) == (str(weights), 2, None)
    assert error.value.expected - error.value.found == 8


def test_convert_output_errors_are_output_errors(tmp_path):
    cfg, weights = write(tmp_path / "m.cfg", YOLO), write(tmp_path / "m.weights", weights_for(YOLO))
    write(tmp_path / "f.cfg", "mine")
    with pytest.raises(OutputError) as error:
        darkfold.convert(cfg, weights, tmp_path / "f.cfg", tmp_path / "f.weights")
    assert error.value.path == str(tmp_path / "f.cfg") and error.value.found == "an existing file"


def test_fold_without_weights_is_a_model_error():
    with pytest.raises(ModelError, match="fold needs the weights"):
        darkfold.load(darkfold.DEFAULT_CFG).fold()


# --------------------------------------------------------------------------------------------
# small models to break: YOLO is fixtures.SMALL_YOLO

YOLO_2_CLASSES = YOLO.replace("filters=18", "filters=21").replace("classes=1", "classes=2")
YOLO_FOLDED = YOLO.replace("batch_normalize=1", "batch_normalize=0")
# A NaN as the first bias: the right size, garbage inside.
NAN = lambda: weights_for(YOLO)[:20] + np.float32("nan").tobytes() + weights_for(YOLO)[24:]


HEADER = Header(0, 2, 0, 64000)


@functools.cache
def weights_for(cfg_text, header=HEADER, layers=None, seed=0):
    """A weights file for ``cfg_text``, of random values; only the first ``layers`` layers if given."""
    _, specs, _ = build_layers(Cfg(cfg_text))
    count = sum(layer.param_count for layer in specs[:layers])
    return header.to_bytes() + np.random.default_rng(seed).random(count, dtype=np.float32).tobytes()


def header_bytes(major, minor, revision, seen, seen_type):
    return np.array([major, minor, revision], "<i4").tobytes() + np.array([seen], seen_type).tobytes()


def write(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# --------------------------------------------------------------------------------------------
# the table: every bad input, every command


@dataclass(frozen=True)
class Case:
    """One bad input: files to create, the command line, and what the error must say.

    ``files`` maps a name in a scratch folder (the working directory of the
    command) to its text or bytes, or to a function returning them. The
    command must exit with ``code``, print nothing on stdout, and end stderr
    with one line ``darkfold: error: <file>...`` containing ``message``
    (warnings may come before it). Afterwards the scratch folder holds
    exactly the files created, unchanged: no output, no temporary file.
    """

    name: str
    files: dict
    argv: tuple
    file: str  # the message starts with this: the file, and ":line" where there is one
    message: str
    code: int = 2


def case(name, files, argv, file, message, code=2):
    return Case(name, files, tuple(argv.split()), file, message, code)


M = {"m.cfg": YOLO, "m.weights": lambda: weights_for(YOLO)}  # a good pair, to break one file of
DOG = lambda: (Path(__file__).parent.parent / "data" / "dog.jpg").read_bytes()
CUT = lambda data, end: lambda: data()[:end]  # one-line table helpers
CFG = lambda text: {"bad.cfg": text}
INFO = "info bad.cfg"

CASES = [
    # ---- the cfg file (info)
    case("cfg missing", {}, "info nope.cfg", "nope.cfg", "cfg file not found"),
    case("cfg is a folder", {"d/x": ""}, "info d", "d", "is a directory, expected a cfg file"),
    case("cfg empty", CFG(""), INFO, "bad.cfg", "no sections; a cfg starts with [net]"),
    case("cfg only comments", CFG("# yolo\n; more\n"), INFO, "bad.cfg", "no sections"),
    case("weights given as the cfg", {"bad.cfg": lambda: weights_for(YOLO)}, INFO, "bad.cfg",
         "not a text cfg file (a zero byte at offset 0); is it a .weights file given in place of the .cfg?"),
    case("option before any section", CFG("width=8\n" + NET), INFO, "bad.cfg:1", "comes before the first [section]"),
    case("unclosed section header", CFG(NET + "[convolutional\n"), INFO, "bad.cfg:5",
         "expected a section header like [convolutional]"),
    case("line without =", CFG(NET + "[maxpool]\nsize 2\n"), INFO, "bad.cfg:6", "'size 2': expected key=value"),
    case("first section not [net]", CFG("[convolutional]\nfilters=4\n"), INFO, "bad.cfg:1",
         "the first section is [convolutional]; a cfg starts with [net]"),
    case("net without height", CFG("[net]\nwidth=8\nchannels=3\n[maxpool]\n"), INFO, "bad.cfg:1",
         "needs width=, height= and channels="),
    case("no layers", CFG(NET), INFO, "bad.cfg", "no layers after [net]"),
    case("unknown layer type", CFG(NET + "[convolution]\n"), INFO, "bad.cfg:5",
         "layer 0: unknown layer type [convolution]; darkfold knows: "),
    case("unsupported layer type", CFG(NET + "[lstm]\noutput=4\n"), INFO, "bad.cfg:5",
         "layer type [lstm] is not supported by darkfold"),
    case("word for a number", CFG(NET + "[convolutional]\nfilters=four\n"), INFO, "bad.cfg:6",
         "[convolutional] filters='four': expected an integer"),
    case("zero filters", CFG(NET + "[convolutional]\nfilters=0\n"), INFO, "bad.cfg:6", "expected an integer >= 1"),
    case("fraction for an integer", CFG(NET + "[maxpool]\nsize=1.5\n"), INFO, "bad.cfg:6",
         "size='1.5': expected an integer"),
    case("integer of 5000 digits", CFG(NET + "[maxpool]\nsize=" + "7" * 5000 + "\n"), INFO, "bad.cfg:6",
         "': expected an integer"),
    case("infinite number", CFG(YOLO.replace("classes=1", "classes=1\nscale_x_y=1e999")), INFO, "bad.cfg:27",
         "scale_x_y='1e999': expected a number"),
    case("unknown activation", CFG(NET + "[convolutional]\nactivation=leakyy\n"), INFO, "bad.cfg:6",
         "unknown activation 'leakyy'; Darknet knows: "),
    case("duplicate key", CFG(NET + "[maxpool]\nsize=2\nsize=3\n"), INFO, "bad.cfg:7",
         "duplicate key 'size' in [maxpool] (first set on line 6)"),
    case("route to a missing layer", CFG(NET + "[maxpool]\n[route]\nlayers=-3\n"), INFO, "bad.cfg:7",
         "layers=-3 refers to layer -2, which does not exist"),
    case("route of unequal sizes", CFG(NET + "[maxpool]\n[maxpool]\nsize=2\nstride=2\n[route]\nlayers=-1,-2\n"),
         INFO, "bad.cfg:10", "route needs equal width and height"),
    case("shortcut of unequal sizes", CFG(NET + "[maxpool]\n[maxpool]\nsize=2\nstride=2\n[shortcut]\nfrom=-2\n"),
         INFO, "bad.cfg:10", "darkfold supports shortcuts between layers of equal width and height only"),
    case("classes vs filters before [yolo]", CFG(YOLO.replace("classes=1", "classes=80")), INFO, "bad.cfg:23",
         "the layer before outputs 18 channels, but classes=80 with 3 masked anchors needs 85 x 3 = 255: "
         "set filters=255 in the [convolutional] layer before it"),
    case("mask outside the anchors", CFG(YOLO.replace("mask=0,1,2", "mask=3,4,5")), INFO, "bad.cfg:24",
         "mask index 3 is outside the 3 anchors"),
    case("too few anchors", CFG(YOLO.replace("anchors=10,14, 23,27, 37,58", "anchors=10,14")), INFO,
         "bad.cfg:25", "anchors= has 2 values, expected 6"),
    case("kernel larger than the input", CFG("[net]\nwidth=4\nheight=4\nchannels=1\n[convolutional]\nsize=5\n"),
         INFO, "bad.cfg:5", "a 5x5 kernel does not fit the 4 x 4 input"),
    case("groups not dividing channels", CFG(NET + "[convolutional]\nfilters=4\ngroups=2\n"), INFO, "bad.cfg:7",
         "groups=2 must divide both the input channels (3) and filters (4)"),
    case("option darkfold does not implement", CFG(NET + "[convolutional]\nxnor=1\n"), INFO, "bad.cfg:6",
         "xnor=1 is not supported by darkfold"),
    case("reorg stride not dividing", CFG(NET + "[reorg]\nstride=3\n"), INFO, "bad.cfg:6",
         "stride=3 does not divide the 32 x 32 input"),
    case("reorg of channels that do not split", CFG(NET + "[reorg]\nstride=2\n"), INFO, "bad.cfg:6",
         "Darknet's reorg cuts the channels of its input into stride x stride = 4 planes, and 4 does not divide 3"),
    case("upsample stride 0", CFG(NET + "[upsample]\nstride=0\n"), INFO, "bad.cfg:6", "stride=0: expected a non-zero"),
    case("yolo classes=0", CFG(YOLO.replace("classes=1", "classes=0")), INFO, "bad.cfg:26",
         "classes='0': expected an integer >= 1"),
    case("CR-only line ends", CFG(YOLO.replace("\n", "\r")), INFO, "bad.cfg:1", "old Mac (CR-only) line ends"),
    case("CRLF cfg with a bad value", CFG((NET + "[convolutional]\nfilters=four\n").replace("\n", "\r\n")), INFO,
         "bad.cfg:6", "filters='four': expected an integer"),
    # ---- absurd sizes: fail before anything is allocated
    case("width=100000", CFG(YOLO.replace("width=32", "width=100000")), INFO, "bad.cfg:2",
         "width=100000: darkfold accepts inputs of at most 16384 pixels a side"),
    case("filters=1000000000", CFG(NET + "[convolutional]\nfilters=1000000000\nsize=3\n"), INFO, "bad.cfg:5",
         "its weights would be 1000000000 x 3 x 3 x 3 = 27,000,000,000 values"),
    case("upsample to an absurd size", CFG(NET + "[upsample]\nstride=100000\n"), INFO, "bad.cfg:5",
         "the output would be 3200000 x 3200000 x 3"),
    case("maxpool window beyond any image", CFG(NET + "[maxpool]\nsize=100000\n"), INFO, "bad.cfg:6",
         "size=100000 is larger than any input darkfold accepts"),
    # ---- the weights file (info)
    case("weights missing", {"m.cfg": YOLO}, "info m.cfg nope.weights", "nope.weights", "weights file not found"),
    case("weights is a folder", {"m.cfg": YOLO, "w/x": ""}, "info m.cfg w", "w",
         "is a directory, expected a weights file"),
    case("weights empty", {"m.cfg": YOLO, "m.weights": b""}, "info m.cfg m.weights", "m.weights",
         "the weights file is empty"),
    case("weights shorter than a header", {**M, "m.weights": b"\0" * 10}, "info m.cfg m.weights", "m.weights",
         "10 bytes is too short for a Darknet weights header"),
    case("cfg given as the weights", {"m.cfg": YOLO}, "info m.cfg m.cfg", "m.cfg",
         "this is a text file, not Darknet weights; is it the .cfg given in place of the .weights?"),
    case("negative version", {**M, "m.weights": header_bytes(-1, 2, 0, 0, "<u8") + b"\0" * 64},
         "info m.cfg m.weights", "m.weights", "bad header: version -1.2.0 is not a Darknet weights version"),
    case("huge version", {**M, "m.weights": header_bytes(70000, 2, 0, 0, "<u8") + b"\0" * 64},
         "info m.cfg m.weights", "m.weights", "bad header: version 70000.2.0"),
    case("truncated weights", {**M, "m.weights": CUT(M["m.weights"], -100)}, "info m.cfg m.weights", "m.weights",
         "truncated: layer 2 [convolutional] (m.cfg:18) needs 648 bytes from offset 1012, but only 548 remain: "
         "expected 1660 bytes, file has 1560 (100 missing). A truncated download, or weights for a different cfg."),
    case("extended weights", {**M, "m.weights": lambda: weights_for(YOLO) + b"\0" * 8}, "info m.cfg m.weights",
         "m.weights", "8 bytes left over after the last layer with parameters (layer 2 [convolutional], m.cfg:18)"),
    case("32-bit seen under version 0.2", {**M, "m.weights": lambda: header_bytes(0, 2, 0, 5000, "<u4")
                                           + weights_for(YOLO)[20:]},
         "info m.cfg m.weights", "m.weights", "between a 32-bit and a 64-bit `seen`"),
    case("64-bit seen under version 0.1", {**M, "m.weights": lambda: header_bytes(0, 1, 0, 5000, "<u8")
                                           + weights_for(YOLO)[20:]},
         "info m.cfg m.weights", "m.weights", "between a 32-bit and a 64-bit `seen`"),
    case("backbone .conv.N without --partial", {**M, "m.conv.1": lambda: weights_for(YOLO, layers=1)},
         "info m.cfg m.conv.1", "m.conv.1", "partial=True (--partial)"),
    case("backbone cut inside a layer, --partial", {**M, "m.conv.1": lambda: weights_for(YOLO, layers=1)[:-4]},
         "info m.cfg m.conv.1 --partial", "m.conv.1", "truncated: layer 0 [convolutional]"),
    case("folded weights with the unfolded cfg", {**M, "f.weights": lambda: weights_for(YOLO_FOLDED)},
         "info m.cfg f.weights", "f.weights", "these are folded weights (darkfold convert); use them with the "
                                              "folded cfg"),
    case("weights for other classes", {**M, "c2.cfg": YOLO_2_CLASSES}, "info c2.cfg m.weights", "m.weights",
         "The file fits this cfg with classes=1 instead of 2 in every [yolo] layer"),
    case("misspelt batch_normalize", {**M, "typo.cfg": YOLO.replace("batch_normalize", "batch_normalise")},
         "info typo.cfg m.weights", "m.weights",
         "96 bytes left over after the last layer with parameters (layer 2 [convolutional], typo.cfg:18): this "
         "cfg needs 1564 bytes, file has 1660. The file is exactly the size of this model with BatchNorm in every "
         "convolution before the heads: these look like unfolded weights"),
    case("--partial without weights", M, "info m.cfg --partial", "m.cfg", "--partial is about a weights file"),
    # ---- convert
    case("convert without weights", M, "convert m.cfg -o out", "m.cfg", "convert needs the weights too"),
    case("convert truncated weights", {**M, "m.weights": CUT(M["m.weights"], -1)}, "convert m.cfg m.weights -o out",
         "m.weights", "truncated: layer 2"),
    case("convert a bad cfg", {**M, "m.cfg": YOLO.replace("filters=18", "filters=19")},
         "convert m.cfg m.weights -o out", "m.cfg:23", "set filters=18"),
    case("convert swapped inputs", M, "convert m.weights m.cfg -o out", "m.weights", "not a text cfg file"),
    case("convert weights holding NaN", {**M, "m.weights": NAN}, "convert m.cfg m.weights -o out", "m.cfg",
         "layer 2 outputs NaN or inf on the sample input, so no fold can be checked against it"),
    case("convert output exists", {**M, "out/m-folded.weights": "mine"}, "convert m.cfg m.weights -o out",
         "out/m-folded.weights", "already exists; use --force (force=True) to replace it"),
    case("convert output is the input", {"x.cfg": YOLO, "x-folded.cfg": lambda: weights_for(YOLO)},
         "convert x.cfg x-folded.cfg -o . --force", "./x-folded.cfg", "output would overwrite the input x-folded.cfg"),
    case("convert output folder is a file", {**M, "out": "a file"}, "convert m.cfg m.weights -o out", "out",
         "output folder is a file"),
    case("convert missing cfg, --force", {"m.weights": M["m.weights"], "out/gone-folded.cfg": "old"},
         "convert gone.cfg m.weights -o out --force", "gone.cfg", "cfg file not found"),
    # ---- verify
    case("verify without weights", M, "verify m.cfg", "m.cfg", "verify needs the weights too"),
    case("verify without the folded weights", M, "verify m.cfg m.weights m.cfg", "m.cfg",
         "give the folded weights too"),
    case("verify truncated weights", {**M, "m.weights": CUT(M["m.weights"], -8)}, "verify m.cfg m.weights",
         "m.weights", "truncated: layer 2"),
    case("verify against another network", {**M, "c2.cfg": YOLO_2_CLASSES,
                                            "c2.weights": lambda: weights_for(YOLO_2_CLASSES)},
         "verify m.cfg m.weights c2.cfg c2.weights", "c2.cfg", "these are not the same network"),
    case("verify weights holding NaN", {**M, "m.weights": NAN}, "verify m.cfg m.weights", "m.cfg",
         "its weights hold NaN or inf (a damaged file?)"),
    case("verify a layer the engine cannot run", {"l.cfg": LOCAL, "l.weights": lambda: weights_for(LOCAL)},
         "verify l.cfg l.weights", "l.cfg:5", "layer 0 [local] is not supported by darkfold's engine"),
    # ---- detect (the bundled model; nothing may appear in ./predictions)
    case("detect a missing image", {}, "detect nope.jpg", "nope.jpg", "no such file or folder"),
    case("detect text named .jpg", {"t.jpg": "hello"}, "detect t.jpg", "t.jpg", "not an image OpenCV can read"),
    case("detect a truncated JPEG", {"cut.jpg": lambda: DOG()[:2000]}, "detect cut.jpg", "cut.jpg", "corrupt JPEG"),
    case("detect an empty file", {"e.jpg": b""}, "detect e.jpg", "e.jpg", "empty file, not an image"),
    case("detect an empty folder", {"d/notes.txt": "no images"}, "detect d", "d", "folder holds no images"),
    case("detect an unreadable video", {"v.mp4": "not a video"}, "detect v.mp4", "v.mp4", "cannot open as a video"),
    case("detect random bytes as an image", {"r.png": bytes(range(256)) * 8}, "detect r.png", "r.png",
         "not an image OpenCV can read"),
    case("detect --cfg without --weights", M, "detect --cfg m.cfg", "m.cfg", "needs both --cfg and --weights"),
    case("detect a missing names file", {}, "detect --names nope.names", "nope.names", "names file not found"),
    case("detect names that do not fit", {"two.names": "a\nb\n"}, "detect --names two.names", "two.names",
         "2 class names, but the model has classes=80"),
    case("detect a cfg without a head", {"h.cfg": NET + "[maxpool]\n", "h.weights": lambda: weights_for(NET + "[maxpool]\n")},
         "detect --cfg h.cfg --weights h.weights", "h.cfg", "no [yolo] or [region]"),
]


def snapshot(folder):
    """Every file and folder under ``folder`` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def test_the_table_has_forty_distinct_bad_inputs():
    assert len({c.name for c in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_is_exit_2_one_message_naming_the_file_and_nothing_written(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, data in case.files.items():
        write(tmp_path / name, data() if callable(data) else data)
    before = snapshot(tmp_path)
    code = main(list(case.argv))
    out, err = capsys.readouterr()
    *warnings, error = err.splitlines() or [""]
    assert (code, out) == (case.code, "")
    assert all(line.startswith("darkfold: warning: ") for line in warnings), err
    assert error.startswith(f"darkfold: error: {case.file}: ") or error == f"darkfold: error: {case.file}", err
    assert case.message in error, err
    assert snapshot(tmp_path) == before  # no output, no temporary file, inputs untouched


def test_a_layer_the_engine_cannot_run_is_a_model_error_naming_file_line_and_layer(tmp_path):
    cfg, weights = write(tmp_path / "l.cfg", LOCAL), write(tmp_path / "l.weights", weights_for(LOCAL))
    model = darkfold.load(cfg, weights)
    with pytest.raises(ModelError) as error:
        model.forward(np.zeros((1, 3, 32, 32), np.float32))
    assert str(error.value).startswith(f"{cfg}:5: layer 0 [local] is not supported by darkfold's engine (it runs: ")
    assert (error.value.path, error.value.line, error.value.layer, error.value.found) == (str(cfg), 5, 0, "local")


def test_a_wrong_input_to_forward_is_a_model_error():
    with pytest.raises(ModelError, match="input: expected float32 values, got float64") as error:
        darkfold.load().forward(np.zeros((1, 3, 416, 416)))
    assert (error.value.expected, error.value.found) == ("float32", "float64")
