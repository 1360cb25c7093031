import pytest

from darkfold.cfg import Cfg, read_cfg
from darkfold.errors import CfgError, DarkfoldError

from conftest import all_cfgs, write

SMALL = """[net]
# a comment
width=416 ; inline comment
height = 416
channels=3

[convolutional]
filters=16   # inline
size=3
anchors = 10,13,  16,30
"""


def test_sections_options_and_line_numbers_are_kept():
    cfg = Cfg(SMALL, "small.cfg")
    net, conv = cfg.sections
    assert (net.name, net.line, conv.name, conv.line) == ("net", 1, "convolutional", 7)
    assert net.options["width"].value == "416"
    assert net.options["height"].line == 4
    assert conv.get_int("filters") == 16
    assert conv.get_floats("anchors") == [10, 13, 16, 30]
    assert conv.where("size") == "small.cfg:9"


def test_crlf_and_network_section_name_are_accepted():
    cfg = Cfg(SMALL.replace("\n", "\r\n").replace("[net]", "[network]"), "crlf.cfg")
    assert cfg.sections[0].name == "network"
    assert cfg.sections[1].get_int("filters") == 16
    assert cfg.text() == SMALL.replace("\n", "\r\n").replace("[net]", "[network]")


@pytest.mark.parametrize("path", all_cfgs(), ids=lambda p: p.name)
def test_every_shipped_cfg_writes_back_byte_for_byte(path):
    assert read_cfg(path).text().encode() == path.read_bytes()


def test_set_changes_only_the_value_and_keeps_the_comment():
    cfg = Cfg(SMALL, "small.cfg")
    cfg.set(cfg.sections[1], "filters", 32)
    assert cfg.lines[7] == "filters=32   # inline\n"
    assert cfg.text() == SMALL.replace("filters=16", "filters=32")
    assert Cfg(cfg.text()).sections[1].get_int("filters") == 32


def test_duplicate_key_is_kept_aside_and_the_first_value_wins():
    cfg = Cfg("[net]\nwidth=8\n[convolutional]\nfilters=4\nfilters=8\n", "dup.cfg")
    (duplicate,) = cfg.sections[1].duplicates
    assert (duplicate.key, duplicate.line) == ("filters", 5)
    assert cfg.sections[1].get_int("filters") == 4  # Darknet's option_find: first wins


@pytest.mark.parametrize(
    "getter, value, expected",
    [("get_int", "abc", "expected an integer"), ("get_int", "1.5", "expected an integer"),
     ("get_int", "1_6", "expected an integer"), ("get_int", "\uff11\uff16", "expected an integer"),
     ("get_int", "99999999999", "expected an integer"), ("get_float", "1_0.5", "expected a number"),
     ("get_float", "x", "expected a number"), ("get_float", "nan", "expected a number"),
     ("get_ints", "1,,2", "expected a comma-separated list of integers"),
     ("get_str", "", "expected a value")],
)
def test_bad_value_names_file_line_key_and_expected_type(getter, value, expected):
    cfg = Cfg(f"[net]\nwidth=8\n\n[maxpool]\nsize={value}\n", "bad.cfg")
    with pytest.raises(CfgError) as error:
        getattr(cfg.sections[1], getter)("size")
    assert str(error.value) == f"bad.cfg:5: [maxpool] size={value!r}: {expected}"


def test_integer_below_minimum_is_an_error():
    section = Cfg("[net]\n[convolutional]\nfilters=0\n", "zero.cfg").sections[1]
    with pytest.raises(CfgError, match=r"zero.cfg:3: \[convolutional\] filters='0': expected an integer >= 1"):
        section.get_int("filters", 1, minimum=1)


def test_missing_required_key_names_the_section():
    section = Cfg("[net]\n[route]\n", "route.cfg").sections[1]
    with pytest.raises(CfgError, match=r"route.cfg:2: \[route\] needs 'layers=', which is missing"):
        section.get_ints("layers")


def test_unread_lists_what_no_getter_asked_for():
    section = Cfg(SMALL, "small.cfg").sections[1]
    section.get_int("filters")
    section.allow_unused("size")
    assert [o.key for o in section.unread()] == ["anchors"]


@pytest.mark.parametrize(
    "text, message",
    [("width=1\n[net]\n", "x.cfg:1: option 'width=1' comes before the first [section]"),
     ("[net]\nwidth\n", "x.cfg:2: 'width': expected key=value"),
     ("[net]\n[convolutional\n", "x.cfg:2: '[convolutional': expected a section header"),
     ("# only a comment\n", "x.cfg: no sections")],
)
def test_malformed_lines_are_errors_with_line_numbers(text, message):
    with pytest.raises(CfgError) as error:
        Cfg(text, "x.cfg")
    assert str(error.value).startswith(message)


def test_missing_cfg_file_names_the_path(tmp_path):
    with pytest.raises(DarkfoldError, match="nope.cfg: cfg file not found"):
        read_cfg(tmp_path / "nope.cfg")


def test_folder_given_as_cfg_is_an_error(tmp_path):
    with pytest.raises(DarkfoldError, match="is a directory, expected a cfg file"):
        read_cfg(tmp_path)


def test_binary_file_given_as_cfg_suggests_swapped_arguments(tmp_path):
    path = write(tmp_path / "model.weights", b"\x00\x00\x00\x00\x02\x00\x00\x00\xff\xfe")
    with pytest.raises(CfgError, match="not a text cfg file .* given in place of the .cfg"):
        read_cfg(path)


@pytest.mark.parametrize("data", ["\ufeff[net]\r\nwidth=8\r\n".encode("utf-8"),
                                  "[net]\n# Gr\xf6\xdfe\nwidth=8\n".encode("latin-1")],
                         ids=["utf-8 with BOM", "latin-1 comment"])
def test_byte_order_mark_and_legacy_encodings_read_and_write_back(tmp_path, data):
    cfg = read_cfg(write(tmp_path / "x.cfg", data))
    assert cfg.sections[0].name == "net" and cfg.sections[0].get_int("width") == 8
    assert cfg.to_bytes() == data
    assert cfg.copy().to_bytes() == data


def test_without_sections_drops_only_those_sections_and_keeps_the_next_comment():
    cfg = Cfg(SMALL + "\n# pooling\n[maxpool]\nsize=2\n", "small.cfg")
    trimmed = cfg.without_sections([cfg.sections[1]])
    assert [s.name for s in trimmed.sections] == ["net", "maxpool"]
    assert trimmed.text() == SMALL[: SMALL.index("[convolutional]")] + "# pooling\n[maxpool]\nsize=2\n"


def test_lines_break_at_newline_only_as_in_darknet(tmp_path):
    # cp1252's ellipsis is byte 0x85, which Python's splitlines() would take for a line break.
    data = "[net]\n# wait\x85 more\nwidth=8\n".encode("latin-1")
    cfg = read_cfg(write(tmp_path / "x.cfg", data))
    assert cfg.sections[0].options["width"].line == 3 and cfg.to_bytes() == data


def test_comment_after_a_section_header_warns_that_darknet_reads_it():
    section = Cfg("[net] # input\nwidth=8\n", "c.cfg").sections[0]
    assert section.name == "net"
    assert section.comment_warnings == ["c.cfg:1: Darknet reads the section name with its comment, "
                                        "'[net]#input', and does not recognise it. Put the comment on a line "
                                        "of its own"]


def test_device_given_as_cfg_is_refused_not_read_forever():
    with pytest.raises(DarkfoldError, match="/dev/zero: not a regular file"):
        read_cfg("/dev/zero")


def test_integer_with_thousands_of_digits_is_a_bad_value_not_a_crash():
    # Python's int() raises ValueError past 4300 digits; found by fuzzing.
    section = Cfg("[net]\n[maxpool]\nsize=" + "9" * 5000 + "\n", "big.cfg").sections[1]
    with pytest.raises(CfgError, match=r"big.cfg:3: \[maxpool\] size='9999.*': expected an integer"):
        section.get_int("size")


def test_leading_zeros_do_not_count_as_digits():
    section = Cfg("[net]\n[maxpool]\nsize=" + "0" * 5000 + "12\nstride=-0007\n", "z.cfg").sections[1]
    assert (section.get_int("size"), section.get_int("stride")) == (12, -7)


def test_infinite_number_is_a_bad_value():
    section = Cfg("[net]\n[yolo]\nscale_x_y=1e999\n", "inf.cfg").sections[1]
    with pytest.raises(CfgError, match=r"inf.cfg:3: \[yolo\] scale_x_y='1e999': expected a number"):
        section.get_float("scale_x_y")


def test_old_mac_line_ends_are_an_error_not_one_long_line():
    with pytest.raises(CfgError, match=r"mac.cfg:1: a carriage return inside a line: .*CR-only") as error:
        Cfg("[net]\rwidth=8\rheight=8\r", "mac.cfg")
    assert (error.value.path, error.value.line) == ("mac.cfg", 1)


def test_bad_value_error_carries_file_line_expected_and_found():
    section = Cfg("[net]\nwidth=8\n[maxpool]\nsize=four\n", "f.cfg").sections[1]
    with pytest.raises(CfgError) as error:
        section.get_int("size")
    error = error.value
    assert (error.path, error.line, error.expected, error.found) == ("f.cfg", 4, "an integer", "four")


def test_a_file_of_megabytes_given_as_cfg_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    import darkfold.cfg

    monkeypatch.setattr(darkfold.cfg, "MAX_CFG_BYTES", 1000)
    path = write(tmp_path / "movie.cfg", "[net]\n" + "# padding\n" * 200)
    with pytest.raises(CfgError, match=r"movie.cfg: more than 1,000 bytes, far more than any cfg") as error:
        read_cfg(path)
    assert error.value.found == "more than 1000"
