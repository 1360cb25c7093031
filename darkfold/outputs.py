"""What `darkfold detect` prints for each ``Prediction``: one function per format, each giving
the text of one result, without the final newline ("" for nothing).

``text``: Darknet's lines (``dog: 81%  (left_x: 124  top_y: 220  width: 258  height: 298)``)
under a line per image or frame; a failed input prints nothing here (the command reports it
on stderr). ``json_line``: JSON Lines, one object per image or frame, written as it is found,
so that a run over an archive can be read while it runs and cut short without losing what
was printed.
"""

import json
import unicodedata


def printable(message):
    """``message`` on one line: control characters and line separators escaped (``\\x1b``).

    Messages and lines quote the user's files, and a file or section name holding ESC or a
    newline must neither reach the terminal as such nor fake a line of output.
    """
    return "".join(ch if unicodedata.category(ch) not in ("Cc", "Zl", "Zp") else ascii(ch)[1:-1]
                   for ch in str(message))


def text(prediction):
    """``path: 6 detected in 115 ms -> predictions/dog.jpg`` for an image, ``path frame 0: 6
    detected`` for a video frame, then Darknet's line for each detection; after a video's last
    frame, ``path: 2 frames -> predictions/clip.mp4``."""
    if prediction.error is not None:
        return ""
    source = printable(prediction.source)
    arrow = "" if prediction.output is None else f" -> {printable(prediction.output)}"
    found = len(prediction.detections)
    if prediction.frame is None:
        lines = [f"{source}: {found} detected in {prediction.seconds * 1e3:.0f} ms{arrow}"]
    else:
        lines = [f"{source} frame {prediction.frame}: {found} detected"]
    lines += [printable(detection.darknet_line()) for detection in prediction.detections]  # names files too
    if prediction.last:
        lines.append(f"{source}: {prediction.frame + 1} frames{arrow}")
    return "\n".join(lines)


def json_line(prediction):
    """``{"image": path, "detections": [...]}``, or ``{"video": path, "frame": n, "detections":
    [...]}``, each detection in ``Detection.as_dict``'s form; a failed input is ``{"image" (or
    "video", or "input" for a path that named neither): path, "error": message}``. A result
    with warnings (a video's last frame: the video was shorter than its container said) holds
    them as ``"warnings": [...]``, which also go to stderr."""
    record = {prediction.kind: prediction.source}
    if prediction.frame is not None:
        record["frame"] = prediction.frame
    if prediction.error is not None:
        record["error"] = str(prediction.error)
    else:
        record["detections"] = [detection.as_dict() for detection in prediction.detections]
    if prediction.warnings:
        record["warnings"] = list(prediction.warnings)
    return json.dumps(record)
