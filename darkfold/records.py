"""The JSON Lines file of a run that can be resumed: what it recorded, and new lines appended.

``darkfold detect --json`` prints one line per image or video frame (``outputs.json_line``);
``--resume FILE`` (``predict(resume=FILE)``) reads such a file, skips what it records and
appends the rest, so that a run over an archive stopped by a crash, a signal or a lost
machine goes on where it stopped and the file ends with every input once.

What identifies an input is what the line names: ``{"image": path}`` (the path or URL as
printed: the same string must be given again), ``{"video": path, "frame": n}`` for a frame,
and a line with ``"error"`` for a whole image, video or input (recorded, so not tried again:
drop its line from the file to retry it). A video is continued from the frame after the last
one recorded; cameras and live streams are never skipped, nor are images in memory (named
by their place, ``<bytes 0>``, not their content). An input given twice is skipped as many
times as it is recorded.

Each line is appended with one ``write`` on a file opened for appending, so a run killed at
any point leaves whole lines, and at most a last line cut short, without its newline: reading
the file drops that line (truncating the file to its last newline, said in ``warnings``), and
its input runs again. The file is flushed to the disk (``fsync``) at most once a second and
when the run ends, so a crash of the machine loses at most that second's lines.
"""

import collections
import json
import os
import time

from . import outputs
from .errors import OutputError
from .files import reason

SYNC_SECONDS = 1.0  # at most this long between fsyncs of the appended lines


class Records:
    """The resumable record at ``path`` (created if missing). ``done(item)``: whether the
    ``images.Input`` ``item`` needs no run; ``next_frame(item)``: a video's first frame not
    recorded; ``append(prediction)`` records a result. ``inputs``: files it may not be."""

    def __init__(self, path, inputs=None):
        self.path = os.fspath(path)
        self.warnings = []
        if inputs is not None:
            inputs.check_output(self.path, "resume file")
        self._images = collections.Counter()  # (kind, source) of images and failed inputs -> lines recorded
        self._frames = {}  # video -> the frame after the last one recorded
        self._failed = set()  # videos recorded with an error
        self._read()
        try:
            self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as error:
            raise OutputError(f"{self.path}: cannot append to it: {reason(error)}", path=self.path,
                              found=reason(error)) from None
        self._synced = time.monotonic()

    def _read(self):
        try:
            with open(self.path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return
        except OSError as error:
            raise OutputError(f"{self.path}: cannot read it: {reason(error)}", path=self.path,
                              found=reason(error)) from None
        end = data.rfind(b"\n") + 1
        if end < len(data):
            try:
                os.truncate(self.path, end)
            except OSError as error:
                raise OutputError(f"{self.path}: cannot drop its last line, which an interrupted run cut short: "
                                  f"{reason(error)}", path=self.path, found=reason(error)) from None
            self.warnings.append(f"{self.path}: its last line was cut short ({len(data) - end} bytes, an "
                                 "interrupted run): dropped, and its input runs again")
        for number, line in enumerate(data[:end].splitlines(), 1):
            if line.strip():
                self._add(self._parse(line, number))

    def _parse(self, line, number):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        kinds = [kind for kind in ("image", "video", "input") if isinstance(record, dict) and kind in record]
        if len(kinds) != 1 or not isinstance(record[kinds[0]], str):
            raise OutputError(f"{self.path}:{number}: not a line of darkfold detect --json (expected an object "
                              "with \"image\", \"video\" or \"input\"): not a file to resume", path=self.path,
                              line=number, expected="JSON Lines of darkfold detect --json", found="another line")
        return kinds[0], record[kinds[0]], record.get("frame"), "error" in record

    def _add(self, entry):
        kind, source, frame, failed = entry
        if kind != "video":
            self._images[kind, source] += 1
        elif failed:
            self._failed.add(source)
        elif isinstance(frame, int):
            self._frames[source] = max(self._frames.get(source, 0), frame + 1)

    def done(self, item):
        """Whether the input ``item`` (an ``images.Input``) was recorded whole; asked once per
        input, in order, so that an input given twice is done twice only if recorded twice. An
        image in memory (``<bytes 0>``, ...) is named by its place, not its content: never done."""
        if item.kind == "video":
            return not item.live and item.path in self._failed
        if item.kind == "image" and item.source is not None:
            return False
        key = (item.kind if item.kind == "image" else "input", item.path)
        if not self._images[key]:
            return False
        self._images[key] -= 1
        return True

    def next_frame(self, item):
        """The first frame of the video ``item`` that no line records (0 for a camera or live stream)."""
        return 0 if item.live else self._frames.get(item.path, 0)

    def append(self, prediction):
        """Append ``prediction``'s line, in one write."""
        data = (outputs.json_line(prediction) + "\n").encode()
        try:
            while data:
                data = data[os.write(self._file, data):]
            if time.monotonic() - self._synced >= SYNC_SECONDS:
                os.fsync(self._file)
                self._synced = time.monotonic()
        except OSError as error:
            raise OutputError(f"{self.path}: cannot append to it: {reason(error)}", path=self.path,
                              found=reason(error)) from None

    def close(self):
        if self._file is None:
            return
        try:
            os.fsync(self._file)
        except OSError:
            pass  # a pipe or a file system without fsync: the lines were written
        finally:
            os.close(self._file)
            self._file = None
