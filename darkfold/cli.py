"""The ``darkfold`` command: one function per subcommand, over the public API."""

import argparse
import contextlib
import difflib
import errno
import gc
import json
import logging
import os
import re
import sys
import time
import traceback

from . import __version__, convert, interrupts, load, outputs
from .bundled import DEFAULT_CFG, DEFAULT_WEIGHTS, SAMPLE_IMAGE
from .errors import DarkfoldError, ModelError
from .files import OutputFolder
from .outputs import printable
from .summary import layer_table, model_summary
from .options import AUTO, BACKENDS, F32, NUMBA, PRECISIONS, check_probability, check_tolerance, thread_count
from .verify import TOLERANCE, VerificationError, verify

_EXAMPLES = """\
examples:
  darkfold info                                   the bundled YOLOv3-tiny (COCO)
  darkfold info yolov4.cfg yolov4.weights         layer table and weights header
  darkfold info yolov4.cfg --json                 the same facts as JSON
  darkfold convert yolov4.cfg yolov4.weights -o out/
                                                  write out/yolov4-folded.{cfg,weights}
  darkfold verify yolov4.cfg yolov4.weights out/yolov4-folded.cfg out/yolov4-folded.weights
                                                  check the folded pair reproduces the original
  darkfold detect photos/                         detect objects, write predictions/*.jpg
  darkfold export yolov4.cfg yolov4.weights --decode
                                                  write yolov4.onnx for onnxruntime, OpenCV 5, TensorRT
  darkfold warmup                                 compile the kernels ahead (a container image's build)
"""


# Exit codes: 0 success, 1 a bug in darkfold, 2 bad input (argparse's code for bad arguments too).
EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


# Start-up makes ~110k objects that live as long as the process (modules, numba's registries):
# collecting the young generation every 700 new objects, Python's default, walks them again and
# again and finds nothing. A young generation this large still collects what a long run leaves.
_YOUNG_OBJECTS = 200_000


def command():
    """The ``darkfold`` command as the console script and ``python -m darkfold`` run it: ``main``,
    in a process that ends when it returns."""
    gc.set_threshold(_YOUNG_OBJECTS)
    code = main()
    # The interpreter's exit runs full collections, which walk every object still alive. Frozen,
    # they are skipped; their memory goes with the process.
    gc.freeze()
    return code


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    _show_log(args.debug)
    with interrupts.handled():
        return _run(args)


def _show_log(debug=False):
    """Print what darkfold logs at INFO and above (numba's one-time compile, a backend's
    warnings), DEBUG too with ``--debug`` (the backend ``auto`` chose), on stderr, as
    ``darkfold: ...`` lines."""
    logger = logging.getLogger("darkfold")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("darkfold: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (a caller may have replaced it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def _run(args):
    try:
        code = args.run(args)
        sys.stdout.flush()  # a full disk or closed pipe shows here, not at exit
        return code
    except DarkfoldError as error:
        _print_warnings(error)
        if args.debug:
            traceback.print_exc()
        print(f"darkfold: error: {printable(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # outside interrupts.handled(): a thread other than the main one
        print("darkfold: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `darkfold info | head`: the reader left; stay quiet like other Unix tools.
        _drop_stdout()
        return 141
    except OSError as error:
        # darkfold's own files report their errors as OutputErrors: one with no file name
        # is stdout's (`darkfold info > /dev/full`).
        if error.errno not in _STDOUT_ERRORS or error.filename is not None:
            return _internal_error(error, args)
        _drop_stdout()
        print(f"darkfold: error: standard output: cannot write: {os.strerror(error.errno)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:  # noqa: BLE001 - anything else is a darkfold bug: say so, briefly
        return _internal_error(error, args)


# What writing to a full disk, a quota or a failing device raises.
_STDOUT_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def _drop_stdout():
    """Point stdout at /dev/null, so the interpreter's last flush at exit cannot fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _internal_error(error, args):
    if args.debug:
        traceback.print_exc()
    hint = "" if args.debug else " (rerun with --debug for the traceback)"
    print(f"darkfold: internal error, please report it{hint}: {type(error).__name__}: {printable(error)}",
          file=sys.stderr)
    return EXIT_INTERNAL


class _Parser(argparse.ArgumentParser):
    """darkfold's argument parsers: an option is taken only as it is spelt (argparse would take
    ``--thres`` for ``--thresh``, and a later option could change what an abbreviation means),
    and a misspelt command or option gets a "did you mean"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        words, known = [], []
        command = re.search(r"invalid choice: (['\"])(.*?)\1", message)  # the command, as repr() quotes it
        if command:
            words = [command.group(2)]
            known = [name for action in self._actions if action.choices and isinstance(action.choices, dict)
                     for name in action.choices]
        elif message.startswith("unrecognized arguments: "):
            words = [word.partition("=")[0] for word in message.split()[2:] if word.startswith("-")]
            known = list(self._option_string_actions)
        guesses = [match for word in words for match in difflib.get_close_matches(word, known, n=1, cutoff=0.6)]
        if guesses:
            message += f"; did you mean {' or '.join(repr(guess) for guess in dict.fromkeys(guesses))}?"
        super().error(message)


class _CommandParser(_Parser):
    """A subcommand's parser: accepts the global --debug after the command too, and reports an
    argument it does not know itself, with its own options to suggest."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # SUPPRESS: when absent here, the value given before the command stays.
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:  # every option of the command line after the command is this parser's
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


_DEBUG_HELP = "print the Python traceback of an error"


def _parser():
    parser = _Parser(
        prog="darkfold",
        description="Run Darknet YOLO models on a CPU, fold their BatchNorm, and write them back in Darknet format.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"darkfold {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True,
                                     parser_class=_CommandParser)

    info = commands.add_parser(
        "info", help="print a model's layer table, BFLOPs and parameter count",
        description="Print the layer table Darknet prints when it loads CFG: shapes, BFLOPs per\n"
                    "layer, totals, and the weights header when WEIGHTS is given (every byte of\n"
                    "WEIGHTS is checked against CFG). Without CFG, describes the bundled YOLOv3-tiny.",
        epilog="examples:\n  darkfold info\n  darkfold info yolov3.cfg yolov3.weights\n  darkfold info yolov4.cfg --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model(info, "Darknet .weights file to check against CFG")
    info.add_argument("--json", action="store_true", help="print JSON instead of the table")
    info.add_argument("--partial", action="store_true",
                      help="accept a weights file holding only the first layers (e.g. darknet53.conv.74)")
    info.set_defaults(run=run_info)

    convert = commands.add_parser(
        "convert", help="fold BatchNorm and write the folded .cfg and .weights",
        description="Fold every BatchNorm of the model into the layer before it and write\n"
                    "<cfg stem>-folded.cfg and <weights stem>-folded.weights to OUT_DIR.\n"
                    "Inputs are never overwritten; existing outputs only with --force.\n"
                    "Without CFG and WEIGHTS, converts the bundled YOLOv3-tiny.",
        epilog="examples:\n  darkfold convert yolov4.cfg yolov4.weights\n"
               "  darkfold convert yolov4.cfg yolov4.weights -o models/ --force",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model(convert)
    convert.add_argument("-o", "--output", metavar="OUT_DIR", default=".",
                         help="folder for the folded files (default: the current folder; created if missing)")
    convert.add_argument("-f", "--force", action="store_true", help="replace existing output files")
    convert.add_argument("--json", action="store_true", help="print the summary as JSON")
    convert.add_argument("--no-verify", dest="verify", action="store_false",
                         help="skip running both models to check the folded one (see darkfold verify)")
    _add_threads(convert)
    convert.set_defaults(run=run_convert)

    check = commands.add_parser(
        "verify", help="check that a folded model computes what the original computes",
        description="Run the original model (BatchNorm applied as Darknet applies it) and the folded\n"
                    "one on the same input, and print the largest difference of each output, absolute\n"
                    "and relative to max(1, largest |output|). Exits 1 past the tolerance. Without the\n"
                    "folded pair, folds CFG WEIGHTS in memory; without arguments, the bundled model.",
        epilog="examples:\n  darkfold verify\n  darkfold verify yolov4.cfg yolov4.weights\n"
               "  darkfold verify yolov4.cfg yolov4.weights yolov4-folded.cfg yolov4-folded.weights",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model(check, "the original .weights", cfg_help="the original .cfg (default: the bundled model)")
    check.add_argument("folded_cfg", nargs="?", metavar="FOLDED_CFG", help="the folded .cfg")
    check.add_argument("folded_weights", nargs="?", metavar="FOLDED_WEIGHTS", help="the folded .weights")
    check.add_argument("--tolerance", type=_tolerance, default=TOLERANCE, metavar="T",
                       help=f"largest relative difference accepted (default: {TOLERANCE:g})")
    check.add_argument("--json", action="store_true", help="print the differences as JSON")
    _add_threads(check)
    _add_backend(check, "run the folded model on BACKEND; the original runs on darkfold's numba engine")
    check.set_defaults(run=run_verify)
    detect = commands.add_parser(
        "detect", help="detect objects in images, folders and videos; write annotated copies",
        description="Run a YOLO model on each INPUT as Darknet's `detector test` does, print the\n"
                    "detections Darknet-style and write annotated copies to OUT_DIR. An INPUT is an\n"
                    "image, a folder (every image in it), a video, a camera (its number, or a device\n"
                    "such as /dev/video0) or a stream's URL. Without INPUT, a sample image; without\n"
                    "--cfg, the bundled YOLOv3-tiny (COCO). A bad input is reported and skipped; the\n"
                    "exit status is 2 if any input failed.",
        epilog="examples:\n  darkfold detect\n  darkfold detect photos/ clip.mp4 -o out/\n"
               "  darkfold detect 0 --no-draw             the first camera, in real time\n"
               "  darkfold detect rtsp://camera.local/stream --json\n"
               "  darkfold detect street.jpg --cfg yolov4.cfg --weights yolov4.weights --names coco.names\n"
               "  darkfold detect street.jpg --json --thresh 0.5\n"
               "  darkfold detect photos/ --backend openvino --precision bf16\n"
               "  darkfold detect archive/ --no-draw --dask local --resume archive.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    detect.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image, folder of images, video, camera number or device (0, /dev/video0), "
                             "or stream URL (rtsp://, http://)")
    detect.add_argument("--cfg", metavar="CFG", help="Darknet .cfg file (default: the bundled YOLOv3-tiny)")
    detect.add_argument("--weights", metavar="WEIGHTS", help="Darknet .weights file for CFG")
    detect.add_argument("--names", metavar="NAMES",
                        help="class names, one a line (default: COCO's for the bundled model, else numbers)")
    detect.add_argument("--thresh", type=_probability, default=0.25, metavar="T",
                        help="report classes whose probability exceeds T (default: 0.25)")
    detect.add_argument("--letterbox", action="store_true",
                        help="keep the aspect ratio, padding with grey (default: as the cfg's letter_box=)")
    detect.add_argument("-o", "--output", metavar="OUT_DIR", default="predictions",
                        help="folder for the annotated images and videos (default: ./predictions; created if missing; "
                             "an earlier copy of the same name is replaced, as Darknet replaces predictions.jpg)")
    detect.add_argument("--no-draw", dest="draw", action="store_false",
                        help="detect and print only: write no annotated copies (for runs over an archive)")
    detect.add_argument("--json", action="store_true",
                        help="print JSON Lines: one object per image or video frame, as each is done")
    detect.add_argument("--realtime", action=argparse.BooleanOptionalAction,
                        help="detect each time on the newest frame of a video, dropping those a slow model has "
                             "no time for (default: for cameras and rtsp:// streams; files and http(s):// URLs "
                             "give every frame)")
    detect.add_argument("--dask", metavar="SCHEDULER",
                        help="run on a Dask cluster (needs darkfold[dask]): 'local' (one single-threaded worker "
                             "process per CPU), 'local:N' (N of them) or a scheduler's address, tcp://host:8786; "
                             "the workers read the inputs and write the copies under the same paths")
    detect.add_argument("--resume", metavar="FILE.jsonl",
                        help="skip the images and frames recorded in FILE.jsonl (what --json printed) and append "
                             "the new results' JSON lines to it (created if missing)")
    detect.add_argument("--max-pixels", type=_positive_int, metavar="N",
                        help="refuse images of more than N pixels, from the header of a PNG, JPEG, BMP, WebP, "
                             "TIFF or PNM (default: darkfold.images.MAX_PIXELS, 16384 x 16384)")
    _add_threads(detect)
    _add_backend(detect, "run the network on BACKEND; darkfold's preprocessing, decoding and NMS around it")
    detect.set_defaults(run=run_detect)

    export = commands.add_parser(
        "export", help="write the model as an ONNX file (onnxruntime, OpenCV 5, OpenVINO, TensorRT)",
        description="Write CFG WEIGHTS as an ONNX graph with Darknet's semantics, BatchNorm folded: input\n"
                    "'images' (N, 3, H, W) float32, RGB in [0, 1]; outputs layer_<index>, the raw head\n"
                    "inputs, or with --decode 'boxes' (N, K, 4: centre x, y, width, height relative to\n"
                    "the input) and 'scores' (N, K, classes). NMS stays outside the graph. The file is\n"
                    "checked, and run with onnxruntime when it is installed, before it takes its name.\n"
                    "Without CFG and WEIGHTS, exports the bundled YOLOv3-tiny. Needs darkfold[onnx].",
        epilog="examples:\n  darkfold export\n  darkfold export yolov4.cfg yolov4.weights --decode -o yolov4.onnx\n"
               "  darkfold export yolov4.cfg yolov4.weights --batch 4 --opset 18 --force",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model(export)
    export.add_argument("-o", "--output", metavar="OUT.onnx",
                        help="the file to write (default: <cfg stem>.onnx in the current folder; "
                             "an existing folder: <cfg stem>.onnx in it)")
    export.add_argument("--decode", action="store_true",
                        help="decode the [yolo]/[region] heads in the graph: outputs boxes and scores")
    export.add_argument("--batch", type=_positive_int, metavar="N",
                        help="fix the batch dimension to N (default: dynamic)")
    export.add_argument("--opset", type=_whole, metavar="K", help="ONNX opset (default: 17)")
    export.add_argument("-f", "--force", action="store_true", help="replace an existing output file")
    export.add_argument("--json", action="store_true", help="print the summary as JSON")
    export.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip running the written file with onnxruntime against darkfold's engine")
    _add_threads(export)
    export.set_defaults(run=run_export)

    warmup = commands.add_parser(
        "warmup", help="compile the kernels a model runs, ahead of its first run (once per install)",
        description="Have numba compile every kernel the model runs to detect, and keep them in its\n"
                    "cache, so that the first `darkfold detect` starts at once: for a container\n"
                    "image's build (RUN darkfold warmup). Without CFG, the bundled YOLOv3-tiny; a\n"
                    "model whose layers the bundled one lacks needs a warmup of its own.",
        epilog="examples:\n  darkfold warmup\n  darkfold warmup yolov4.cfg yolov4.weights",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model(warmup, "Darknet .weights file for CFG")
    _add_threads(warmup)
    warmup.set_defaults(run=run_warmup)
    return parser


def _add_model(parser, weights_help="Darknet .weights file", cfg_help="Darknet .cfg file (default: the bundled model)"):
    """The optional CFG WEIGHTS positionals of the commands that take a model."""
    parser.add_argument("cfg", nargs="?", metavar="CFG", help=cfg_help)
    parser.add_argument("weights", nargs="?", metavar="WEIGHTS", help=weights_help)


def _add_threads(parser):
    parser.add_argument("--threads", type=_threads, metavar="N",
                        help="worker threads for running the model (default and most: every CPU)")


def _add_backend(parser, what):
    parser.add_argument("--backend", choices=(*BACKENDS, AUTO), default=NUMBA, metavar="BACKEND",
                        help=f"{what}: numba (darkfold's engine, the default), onnxruntime, openvino (each an "
                             "extra: pip install \"darkfold[openvino]\"), or auto: the fastest installed")
    parser.add_argument("--precision", choices=PRECISIONS, default=F32,
                        help="f32 (the default: the engine's outputs within float32 rounding) or bf16: OpenVINO "
                             "in bfloat16 where the CPU has AVX512_BF16 or AMX (faster; close to float32, not "
                             "equal: the README says how close)")


def _probability(text):
    try:
        return check_probability("--thresh", float(text))
    except (ValueError, DarkfoldError):
        raise argparse.ArgumentTypeError(f"expected a probability from 0 to 1, got {text!r}") from None


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _whole(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _threads(text):

    count, capped = thread_count(_positive_int(text))
    if capped:
        print(f"darkfold: warning: --threads {capped}", file=sys.stderr)
    return count


def _tolerance(text):
    try:
        return check_tolerance(float(text))
    except (ValueError, DarkfoldError):
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}") from None


def _model_paths(args, needs=None):
    """(cfg, weights) from the arguments: the bundled model's without CFG. ``needs``, for a
    command that runs or writes the model, says why CFG alone is refused ("convert needs")."""
    if args.cfg is None:
        return DEFAULT_CFG, DEFAULT_WEIGHTS
    if needs is not None and args.weights is None:
        command = needs.split()[0]
        raise ModelError(f"{args.cfg}: {needs} the weights too: darkfold {command} CFG WEIGHTS",
                         path=args.cfg, expected="WEIGHTS", found="none")
    return args.cfg, args.weights


@contextlib.contextmanager
def _output_folder(path):
    """The block writes into the folder ``path``, made first; if it fails, the folder goes again
    when the run made it and left it empty, and a failed check's table is printed first."""
    folder = OutputFolder(path)
    try:
        folder.make()
        yield
    except BaseException as error:
        if isinstance(error, VerificationError):
            print(_verification_table(error.verification), file=sys.stderr)
        folder.remove_if_unused()
        raise


def _print_warnings(source):
    """Print the warnings of a Model, a DarkfoldError or a Prediction."""
    for warning in source.warnings:
        print(f"darkfold: warning: {printable(warning)}", file=sys.stderr)


def run_info(args):
    if args.partial and args.cfg is not None and args.weights is None:
        raise ModelError(f"{args.cfg}: --partial is about a weights file: darkfold info CFG WEIGHTS --partial",
                         path=args.cfg, expected="WEIGHTS", found="none")
    cfg_path, weights_path = _model_paths(args)
    model = load(cfg_path, weights_path, partial=args.partial)
    _print_warnings(model)
    if args.json:
        print(json.dumps(model_summary(model), indent=1))
    else:
        print(layer_table(model))
    return 0


def run_convert(args):
    cfg_path, weights_path = _model_paths(args, "convert needs")
    out_cfg, out_weights = (os.path.join(args.output, _stem(path) + "-folded" + suffix)
                            for path, suffix in ((cfg_path, ".cfg"), (weights_path, ".weights")))
    started = time.perf_counter()
    with _output_folder(args.output):
        folded = convert(cfg_path, weights_path, out_cfg, out_weights, force=args.force, verify=args.verify,
                         threads=args.threads)
    elapsed = time.perf_counter() - started
    _print_warnings(folded)
    check = folded.verification
    size_in, size_out = os.path.getsize(weights_path), os.path.getsize(out_weights)
    if args.json:
        summary = {"cfg": out_cfg, "weights": out_weights, "folded_layers": list(folded.folded_layers),
                   "bytes_in": size_in, "bytes_out": size_out, "seconds": round(elapsed, 3)}
        if check is not None:
            summary["verify"] = _verification_json(check)
        print(json.dumps(summary))
        return 0
    print(f"folded {len(folded.folded_layers)} BatchNorm layers; {len(folded.layers)} layers, {folded.bflops:.3f} BFLOPs")
    print(f"{printable(out_weights)}: {size_out:,} bytes ({size_in - size_out:,} fewer than {printable(weights_path)})")
    print(f"{printable(out_cfg)}: batch_normalize=0 in the folded layers, every other line as in {printable(cfg_path)}")
    if check is not None:
        worst = check.worst
        print(f"verified: outputs match the original within {worst.relative:.1e} "
              f"(tolerance {worst.tolerance:g}, relative to max(1, |output|))")
    print(f"done in {elapsed:.2f} s")
    return 0


def run_verify(args):
    cfg_path, weights_path = _model_paths(args, "verify needs")
    if args.folded_cfg is not None and args.folded_weights is None:
        raise ModelError(f"{args.folded_cfg}: give the folded weights too: "
                         "darkfold verify CFG WEIGHTS FOLDED_CFG FOLDED_WEIGHTS", path=args.folded_cfg,
                         expected="FOLDED_WEIGHTS", found="none")
    original = load(cfg_path, weights_path)
    folded = None if args.folded_cfg is None else load(args.folded_cfg, args.folded_weights)
    _print_warnings(original)
    check = verify(original, folded, tolerance=args.tolerance, threads=args.threads, backend=args.backend,
                   precision=args.precision)
    if args.json:
        print(json.dumps(_verification_json(check)))
    else:
        print(_verification_table(check))
        what = "the folded model" if args.backend == "numba" else f"the folded model on --backend {args.backend}"
        print(f"OK: {what} matches" if check.ok else f"FAILED: {what} differs")
    return 0 if check.ok else 1


def _verification_table(check):
    lines = [f"{'layer':>5}  {'shape':>20}  {'max abs diff':>12}  {'relative':>9}  result"]
    for output in check.outputs:
        shape = " x ".join(map(str, output.shape))
        lines.append(f"{output.layer!s:>5}  {shape:>20}  {output.max_abs:12.3e}  {output.relative:9.2e}  "
                     f"{'ok' if output.ok else 'TOO LARGE'}")
    return "\n".join(lines)


def _verification_json(check):
    return {"ok": check.ok, "outputs": [
        {"layer": o.layer, "shape": list(o.shape), "max_abs_diff": o.max_abs, "relative_diff": o.relative,
         "tolerance": o.tolerance, "ok": o.ok} for o in check.outputs]}


def run_export(args):
    # The exporter imports onnx and onnxruntime (extras): only this command pays for them.
    from .onnx_export import export_onnx

    cfg_path, weights_path = _model_paths(args, "export needs")
    name = _stem(cfg_path) + ".onnx"
    output = args.output or name
    if os.path.isdir(output):
        output = os.path.join(output, name)
    started = time.perf_counter()
    model = load(cfg_path, weights_path)
    with _output_folder(os.path.dirname(output) or "."):
        result = export_onnx(model, output, decode=args.decode, batch=args.batch, opset=args.opset,
                             force=args.force, verify=None if args.verify else False, threads=args.threads)
    elapsed = time.perf_counter() - started
    _print_warnings(result)
    check = result.verification
    if args.json:
        summary = {"onnx": result.path, "bytes": result.size, "opset": result.opset,
                   "input": {"images": list(result.input)},
                   "outputs": {name: list(shape) for name, shape in result.outputs.items()},
                   "seconds": round(elapsed, 3)}
        if check is not None:
            summary["verify"] = _verification_json(check)
        print(json.dumps(summary))
        return 0
    print(f"{printable(result.path)}: {result.size:,} bytes, ONNX opset {result.opset}, BatchNorm folded")
    print(f"  input  images {_dims(result.input)} float32, RGB in [0, 1]")
    for name, shape in result.outputs.items():
        print(f"  output {name} {_dims(shape)}")
    if check is not None:
        print(f"verified with onnxruntime: outputs match darkfold's within {check.worst.relative:.1e} "
              f"(tolerance {check.worst.tolerance:g}, relative to max(1, |output|))")
    print(f"done in {elapsed:.2f} s")
    return 0


def _dims(shape):
    return "(" + ", ".join(map(str, shape)) + ")"


def run_warmup(args):
    # The engine and its kernels: only the commands that run a model load them.
    from .prediction import warmup
    from .kernels.cache import cache_folder

    cfg_path, weights_path = _model_paths(args, "warmup runs the model, so it needs")
    model = load(cfg_path, weights_path)
    _print_warnings(model)
    warmup(model, threads=args.threads)  # logs the compile, if it compiled
    print(f"{printable(cfg_path)}: the kernels it runs are compiled, in numba's cache under "
          f"{printable(cache_folder())}")
    return 0


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def run_detect(args):
    # Detection loads OpenCV and the engine: only this command pays for them.
    from .prediction import predict

    if (args.cfg is None) != (args.weights is None):
        given = args.cfg if args.cfg is not None else args.weights
        raise DarkfoldError(f"{given}: detect needs both --cfg and --weights, or neither (the bundled model)",
                            path=given, expected="--cfg and --weights", found="one of them")
    model = load(args.cfg, args.weights)
    _print_warnings(model)
    run = predict(args.inputs or [SAMPLE_IMAGE], model, names=args.names, thresh=args.thresh,
                  letterbox=args.letterbox or None, threads=args.threads, output=args.output, draw=args.draw,
                  max_pixels=args.max_pixels, realtime=args.realtime, backend=args.backend,
                  precision=args.precision, client=args.dask, resume=args.resume)
    _print_warnings(run)
    show = outputs.json_line if args.json else outputs.text
    progress = _Progress(run.images)
    failed = False
    try:
        for result in run:
            if result.warnings:
                _Progress.clear()
                _print_warnings(result)
            if result.error is not None:
                failed = True
                _Progress.clear()
                print(f"darkfold: error: {printable(result.error)}", file=sys.stderr)
            shown = show(result)
            if shown:
                _Progress.clear()
                print(shown)
            progress.advance(result)
    finally:
        run.close()
    _Progress.clear()
    return EXIT_BAD_INPUT if failed else EXIT_OK


class _Progress:
    """Progress bars on stderr, drawn only when it is a terminal: one over the images of a run
    of more than one, one over the frames of each video; each with the rate so far and, from
    it, the time left."""

    def __init__(self, images):
        self.images, self.images_done = images, 0
        self.shown = sys.stderr.isatty()
        self.started = {}  # what -> (time of the first result, its count)

    def advance(self, result):
        if result.kind == "image" and self.images > 1:
            self.images_done += 1
            self._draw(self.images_done, self.images, "images")
        elif result.kind == "video" and result.frame is not None:
            self._draw(result.frame + 1, result.frames, f"frames of {os.path.basename(result.source)}")
            if result.last:
                self.clear()

    def _draw(self, count, total, what):
        if self.shown:
            now = time.monotonic()
            since, first = self.started.setdefault(what, (now, count))
            rate = (count - first) / (now - since) if now > since else 0
            speed = f" {rate:.1f}/s" if rate else ""
            left = f" {_duration((total - count) / rate)} left" if rate and total > count else ""
            filled = 30 * min(count, total) // total if total else 0  # counts can lie
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {count}/{total or '?'} {what}{speed}{left}\033[K")
            sys.stderr.flush()

    @staticmethod
    def clear():
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _duration(seconds):
    """``1:02:03``, or ``2:03`` under an hour."""
    minutes, seconds = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
