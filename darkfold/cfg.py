"""Read and write Darknet .cfg files.

A cfg is kept as its original lines plus an index of sections and options, so
that writing it back reproduces every comment, blank line and line ending, and
an edit (``Cfg.set``) touches only the value it changes.

Darknet's own reader (``read_cfg`` and ``read_option`` in parser.c and
option_list.c) skips lines that start with ``#`` or ``;`` and splits the rest at
the first ``=``. darkfold reads the same files, and is stricter where Darknet
silently guesses: inline comments are cut (with a warning where Darknet would
read them), a value of the wrong type is an error naming the file and line,
duplicate keys are kept aside for the layer parser to judge, and every option a
layer did not read can be reported.
"""

import math
import os
import re
from dataclasses import dataclass

from .errors import CfgError
from .files import read_bytes

_REQUIRED = object()
# The largest Darknet cfgs are about 25 KB; a file of megabytes given as a cfg is
# something else (weights, an image, a video), and is not read whole.
MAX_CFG_BYTES = 16 * 2**20
_COMMENT_CHARS = "#;"


@dataclass
class Option:
    """One ``key=value`` line of a section."""

    key: str
    value: str  # the text after '=', without inline comment or outer spaces
    line: int  # 1-based line number in the file
    start: int  # where the value starts in the line (for in-place edits)
    darknet_value: str = None  # what Darknet reads instead, when an inline comment follows


class Section:
    """A ``[name]`` section and its options, with typed getters.

    Each getter records the key as read, so that ``unread()`` lists what no
    layer looked at (Darknet prints these as "Unused field").
    """

    def __init__(self, name, line, path):
        self.name = name
        self.line = line
        self.path = path
        self.options = {}
        self.duplicates = []  # later Options whose key was already set
        self.comment_warnings = []  # header or string values Darknet would read with their comment
        self._read = set()
        self._allowed_unused = set()

    def __repr__(self):
        return f"<Section [{self.name}] at {self.where()}>"

    def where(self, key=None):
        """``file:line`` of the section, or of one of its options."""
        line = self.options[key].line if key in self.options else self.line
        return f"{self.path}:{line}"

    def __contains__(self, key):
        return key in self.options

    def _raw(self, key, default):
        self._read.add(key)
        option = self.options.get(key)
        if option is None:
            if default is _REQUIRED:
                raise CfgError(f"{self.where()}: [{self.name}] needs '{key}=', which is missing",
                               path=self.path, line=self.line, expected=f"{key}=", found="nothing")
            return None
        return option.value

    def _bad(self, key, expected):
        option = self.options[key]
        return CfgError(f"{self.where(key)}: [{self.name}] {key}={option.value!r}: expected {expected}",
                        path=self.path, line=option.line, expected=expected, found=option.value)

    def get_str(self, key, default=_REQUIRED, choices=None):
        value = self._raw(key, default)
        if value is None:
            return default
        if not value:
            raise self._bad(key, "a value")
        if choices is not None and value not in choices:
            raise self._bad(key, "one of " + ", ".join(sorted(choices)))
        seen_by_darknet = self.options[key].darknet_value
        if seen_by_darknet is not None:
            # Darknet's strip() keeps '#', so `activation=leaky # x` is the
            # unknown name 'leaky#x' there, and Darknet falls back to relu.
            self.comment_warnings.append(
                f"{self.where(key)}: Darknet reads {key}={seen_by_darknet!r}, comment included; "
                f"darkfold reads {value!r}. Put the comment on a line of its own")
        return value

    def get_int(self, key, default=_REQUIRED, minimum=None):
        value = self._raw(key, default)
        if value is None:
            return default
        number = _to_int(value)
        if number is None:
            raise self._bad(key, "an integer")
        if minimum is not None and number < minimum:
            raise self._bad(key, f"an integer >= {minimum}")
        return number

    def get_float(self, key, default=_REQUIRED):
        value = self._raw(key, default)
        if value is None:
            return default
        number = _to_float(value)
        if number is None:
            raise self._bad(key, "a number")
        return number

    def get_ints(self, key, default=_REQUIRED):
        return self._get_list(key, default, _to_int, "a comma-separated list of integers")

    def get_floats(self, key, default=_REQUIRED):
        return self._get_list(key, default, _to_float, "a comma-separated list of numbers")

    def _get_list(self, key, default, convert, expected):
        value = self._raw(key, default)
        if value is None:
            return default
        items = [convert(item) for item in value.split(",")]
        if not value or None in items:
            raise self._bad(key, expected)
        return items

    def allow_unused(self, *keys):
        """Mark keys as known though no getter reads them: Darknet reads them for training
        (or for the GPU), or another option of the layer makes them moot."""
        self._allowed_unused.update(keys)

    def unread(self):
        """Options no getter asked for and ``allow_unused`` did not name, in file order."""
        known = self.known_keys()
        return [o for o in self.options.values() if o.key not in known]

    def known_keys(self):
        """Every key a getter asked for or ``allow_unused`` named, present or not."""
        return self._read | self._allowed_unused

    def is_allowed_unused(self, key):
        """True for a key ``allow_unused`` named that no getter read."""
        return key in self._allowed_unused and key not in self._read


# Darknet converts with atoi/atof; darkfold accepts the plain ASCII numbers those
# read in full (Python's int() would also take "1_6" or full-width digits).
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INT_LIMIT = 2**31 - 1  # Darknet's int


def _to_int(text):
    text = text.strip()
    if not _INT.fullmatch(text):
        return None
    # Python refuses to convert more than 4300 digits (a ValueError); no int
    # Darknet can hold has more than 10 once leading zeros are gone.
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > len(str(_INT_LIMIT)) or int(digits) > _INT_LIMIT:
        return None
    return -int(digits) if text.startswith("-") else int(digits)


def _to_float(text):
    text = text.strip()
    if not _FLOAT.fullmatch(text):
        return None
    number = float(text)
    # "1e999" is inf to atof too; no option means that, and inf breaks every sum after it.
    return number if math.isfinite(number) else None


class Cfg:
    """A parsed cfg: its lines as written, and the sections read from them."""

    def __init__(self, text, path="<cfg>", encoding="utf-8"):
        self.path = str(path)
        self.encoding = encoding
        # A byte-order mark (Windows editors add one) is kept for writing back.
        self.bom = "\ufeff" if text.startswith("\ufeff") else ""
        self.lines = _split_lines(text[len(self.bom):])
        self.sections = _parse_sections(self.lines, self.path)
        if not self.sections:
            raise CfgError(f"{self.path}: no sections; a cfg starts with [net]", path=self.path,
                           expected="[net]", found="no sections")

    def text(self):
        return self.bom + "".join(self.lines)

    def to_bytes(self):
        return self.text().encode(self.encoding)

    def set(self, section, key, value):
        """Change the value of an existing option, keeping the rest of its line."""
        option = section.options[key]
        line = self.lines[option.line - 1]
        end = option.start + len(option.value)
        self.lines[option.line - 1] = line[: option.start] + str(value) + line[end:]
        option.value = str(value)

    def without_sections(self, drop):
        """A new Cfg without the given sections: from each header to its last option.

        The blank lines right after it go too; a comment after it stays, since
        it usually introduces the next section.
        """
        dropped = set()
        for section in drop:
            last = max([section.line] + [o.line for o in [*section.options.values(), *section.duplicates]])
            while last < len(self.lines) and not self.lines[last].strip():
                last += 1
            dropped.update(range(section.line, last + 1))
        kept = [line for number, line in enumerate(self.lines, start=1) if number not in dropped]
        return Cfg(self.bom + "".join(kept), self.path, self.encoding)

    def copy(self, path=None):
        return Cfg(self.text(), self.path if path is None else path, self.encoding)


def _split_lines(text):
    """Lines with their endings, split at "\\n" only, as Darknet's fgetl does."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _parse_sections(lines, path):
    sections = []
    for number, raw in enumerate(lines, start=1):
        content = raw.rstrip("\r\n")
        if "\r" in content:
            # Darknet's fgetl splits at "\n" only, so it reads such a file as one line.
            raise CfgError(f"{path}:{number}: a carriage return inside a line: the file has old Mac (CR-only) "
                           "line ends, which Darknet reads as one long line; save it with LF or CRLF line ends",
                           path=path, line=number, expected="LF or CRLF line ends", found="CR")
        stripped = content.strip()
        if not stripped or stripped[0] in _COMMENT_CHARS:
            continue
        if stripped.startswith("["):
            sections.append(_parse_header(stripped, number, path))
        elif not sections:
            raise CfgError(f"{path}:{number}: option {stripped!r} comes before the first [section]",
                           path=path, line=number, expected="[net]", found=stripped)
        else:
            _add_option(sections[-1], content, number, path)
    return sections


def _parse_header(stripped, number, path):
    header = _cut_comment(stripped).strip()
    name = header[1:-1].strip()
    if not header.endswith("]") or not name or "[" in name or "]" in name:
        raise CfgError(f"{path}:{number}: {stripped!r}: expected a section header like [convolutional]",
                       path=path, line=number, expected="a section header", found=stripped)
    section = Section(name, number, path)
    if header != stripped:
        section.comment_warnings.append(
            f"{path}:{number}: Darknet reads the section name with its comment, "
            f"{''.join(stripped.split())!r}, and does not recognise it. Put the comment on a line of its own")
    return section


def _add_option(section, content, number, path):
    key, equals, rest = content.partition("=")
    key = key.strip()
    if not equals or not key or any(ch.isspace() for ch in key):
        raise CfgError(f"{path}:{number}: {content.strip()!r}: expected key=value", path=path, line=number,
                       expected="key=value", found=content.strip())
    value_text = _cut_comment(rest)
    value = value_text.strip()
    start = len(content) - len(rest) + (len(value_text) - len(value_text.lstrip()))
    darknet_value = "".join(rest.split()) if len(value_text) < len(rest) else None
    option = Option(key, value, number, start, darknet_value)
    # Darknet's option_find returns the first match; whether a later duplicate
    # is an error depends on whether the key matters (see layers.build_layers).
    if key in section.options:
        section.duplicates.append(option)
    else:
        section.options[key] = option


def _cut_comment(text):
    cut = min((i for i in (text.find(c) for c in _COMMENT_CHARS) if i >= 0), default=len(text))
    return text[:cut]


def read_cfg(path):
    """Parse the cfg file at ``path``."""
    data = read_bytes(path, "cfg", limit=MAX_CFG_BYTES)
    if len(data) > MAX_CFG_BYTES:
        raise CfgError(f"{path}: more than {MAX_CFG_BYTES:,} bytes, far more than any cfg (the largest "
                       "Darknet cfgs are about 25 KB); is it a .weights file or an image given in place of the .cfg?",
                       path=path, expected=f"at most {MAX_CFG_BYTES} bytes", found=f"more than {MAX_CFG_BYTES}")
    if b"\0" in data[:4096]:
        offset = data.index(b"\0")
        raise CfgError(
            f"{path}: not a text cfg file (a zero byte at offset {offset}); "
            "is it a .weights file given in place of the .cfg?",
            path=path, expected="a text file", found=f"a zero byte at offset {offset}",
        )
    try:
        return Cfg(data.decode("utf-8"), os.fspath(path))
    except UnicodeDecodeError:
        # Darknet reads bytes; a comment in a legacy encoding is no error.
        return Cfg(data.decode("latin-1"), os.fspath(path), "latin-1")
