"""The ``darkfold`` command: one function per subcommand, over the public API."""

import argparse
import contextlib
import json
import os
import sys
import time

from . import __version__, convert, load
from .bundled import DEFAULT_CFG, DEFAULT_WEIGHTS
from .errors import DarkfoldError
from .summary import layer_table, model_summary

_EXAMPLES = """\
examples:
  darkfold info                                   the bundled YOLOv3-tiny (COCO)
  darkfold info yolov4.cfg yolov4.weights         layer table and weights header
  darkfold info yolov4.cfg --json                 the same facts as JSON
  darkfold convert yolov4.cfg yolov4.weights -o out/
                                                  write out/yolov4-folded.{cfg,weights}
"""


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except DarkfoldError as error:
        _print_warnings(error)
        print(f"darkfold: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("darkfold: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `darkfold info | head`: the reader left; stay quiet like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _parser():
    parser = argparse.ArgumentParser(
        prog="darkfold",
        description="Read Darknet YOLO models, fold their BatchNorm, and write them back in Darknet format.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"darkfold {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    info = commands.add_parser(
        "info", help="print a model's layer table, BFLOPs and parameter count",
        description="Print the layer table Darknet prints when it loads CFG: shapes, BFLOPs per\n"
                    "layer, totals, and the weights header when WEIGHTS is given (every byte of\n"
                    "WEIGHTS is checked against CFG). Without CFG, describes the bundled YOLOv3-tiny.",
        epilog="examples:\n  darkfold info\n  darkfold info yolov3.cfg yolov3.weights\n  darkfold info yolov4.cfg --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("cfg", nargs="?", metavar="CFG", help="Darknet .cfg file (default: the bundled model)")
    info.add_argument("weights", nargs="?", metavar="WEIGHTS", help="Darknet .weights file to check against CFG")
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
    convert.add_argument("cfg", nargs="?", metavar="CFG", help="Darknet .cfg file (default: the bundled model)")
    convert.add_argument("weights", nargs="?", metavar="WEIGHTS", help="Darknet .weights file")
    convert.add_argument("-o", "--output", metavar="OUT_DIR", default=".",
                         help="folder for the folded files (default: the current folder; created if missing)")
    convert.add_argument("-f", "--force", action="store_true", help="replace existing output files")
    convert.add_argument("--json", action="store_true", help="print the summary as JSON")
    convert.set_defaults(run=run_convert)
    return parser


def _model_paths(args):
    if args.cfg is None:
        return DEFAULT_CFG, DEFAULT_WEIGHTS
    return args.cfg, args.weights


def _print_warnings(source):
    """Print the warnings of a Model or a DarkfoldError."""
    for warning in source.warnings:
        print(f"darkfold: warning: {warning}", file=sys.stderr)


def run_info(args):
    if args.partial and args.cfg is not None and args.weights is None:
        raise DarkfoldError("--partial is about a weights file: darkfold info CFG WEIGHTS --partial")
    cfg_path, weights_path = _model_paths(args)
    model = load(cfg_path, weights_path, partial=args.partial)
    _print_warnings(model)
    if args.json:
        print(json.dumps(model_summary(model), indent=1))
    else:
        print(layer_table(model))
    return 0


def run_convert(args):
    if args.cfg is not None and args.weights is None:
        raise DarkfoldError(f"{args.cfg}: convert needs the weights too: darkfold convert CFG WEIGHTS")
    cfg_path, weights_path = _model_paths(args)
    out_cfg, out_weights = (os.path.join(args.output, _stem(path) + "-folded" + suffix)
                            for path, suffix in ((cfg_path, ".cfg"), (weights_path, ".weights")))
    started = time.perf_counter()
    created = _make_folder(args.output)
    try:
        folded = convert(cfg_path, weights_path, out_cfg, out_weights, force=args.force)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):  # never hide the real error behind this one
                os.rmdir(args.output)
        raise
    elapsed = time.perf_counter() - started
    _print_warnings(folded)
    size_in, size_out = os.path.getsize(weights_path), os.path.getsize(out_weights)
    if args.json:
        print(json.dumps({"cfg": out_cfg, "weights": out_weights, "folded_layers": list(folded.folded),
                          "bytes_in": size_in, "bytes_out": size_out, "seconds": round(elapsed, 3)}))
        return 0
    print(f"folded {len(folded.folded)} BatchNorm layers; {len(folded.layers)} layers, {folded.bflops:.3f} BFLOPs")
    print(f"{out_weights}: {size_out:,} bytes ({size_in - size_out:,} fewer than {weights_path})")
    print(f"{out_cfg}: batch_normalize=0 in the folded layers, every other line as in {cfg_path}")
    print(f"done in {elapsed:.2f} s")
    return 0


def _make_folder(folder):
    """Create the output folder if missing; True if this call created it."""
    if os.path.isdir(folder):
        return False
    if os.path.exists(folder):
        raise DarkfoldError(f"{folder}: output folder is a file")
    try:
        os.makedirs(folder)
    except OSError as error:
        raise DarkfoldError(f"{folder}: cannot create output folder: {error.strerror}") from None
    return True


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]
