"""files.py: input checks, and the one way outputs are written (never over an input, all or none)."""

import errno
import os

import pytest

from darkfold.errors import CfgError, OutputError
from darkfold.files import InputFiles, OutputFolder, atomic_outputs, check_readable


def test_an_input_is_found_by_its_path_a_symlink_and_a_hard_link(tmp_path):
    weights = tmp_path / "m.weights"
    weights.write_bytes(b"weights")
    (tmp_path / "link").symlink_to(weights)
    os.link(weights, tmp_path / "hard")
    inputs = InputFiles([weights])
    assert inputs.matching(tmp_path / "link") == str(weights)
    assert inputs.matching(tmp_path / "hard") == str(weights)
    assert inputs.matching(tmp_path / "sub" / ".." / "m.weights") == str(weights)
    assert inputs.matching(tmp_path / "other") is None


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path):
    weights = tmp_path / "m.weights"
    weights.write_bytes(b"weights")
    os.link(weights, tmp_path / "out.jpg")
    with pytest.raises(OutputError, match="out.jpg: the output would overwrite the input .*m.weights"):
        with atomic_outputs(tmp_path / "out.jpg", inputs=InputFiles([weights])) as (temporary,):
            open(temporary, "wb").write(b"jpeg")
    assert weights.read_bytes() == b"weights"
    assert sorted(os.listdir(tmp_path)) == ["m.weights", "out.jpg"]


def test_an_input_that_appears_at_an_output_name_while_writing_is_not_replaced(tmp_path):
    weights = tmp_path / "m.weights"
    weights.write_bytes(b"weights")
    out = tmp_path / "out.weights"
    with pytest.raises(OutputError, match="would overwrite the input"):
        with atomic_outputs(out, inputs=InputFiles([weights])) as (temporary,):
            open(temporary, "wb").write(b"new")
            os.link(weights, out)  # someone links the input there meanwhile
    assert weights.read_bytes() == b"weights" and out.read_bytes() == b"weights"


def test_without_replace_an_output_created_meanwhile_wins_and_nothing_of_ours_stays(tmp_path):
    # The check-then-act race of three concurrent `convert` runs: the name is taken when the
    # files are put in place, atomically, not when the run starts.
    first, second = tmp_path / "a.cfg", tmp_path / "a.weights"
    with pytest.raises(OutputError, match="a.weights: already exists; use --force"):
        with atomic_outputs(first, second, replace=False) as (cfg, weights):
            open(cfg, "w").write("ours")
            open(weights, "w").write("ours")
            second.write_text("theirs")  # another run finished first
    assert not first.exists() and second.read_text() == "theirs"
    assert sorted(os.listdir(tmp_path)) == ["a.weights"]


def test_without_replace_a_file_system_without_hard_links_still_claims_the_name_exclusively(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted", source)

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "out.cfg"
    with atomic_outputs(out, replace=False) as (temporary,):
        open(temporary, "w").write("new")
    assert out.read_text() == "new"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_outputs(out, replace=False) as (temporary,):
            open(temporary, "w").write("newer")
    assert out.read_text() == "new"


def test_a_failure_inside_the_block_replaces_nothing(tmp_path):
    out = tmp_path / "out.cfg"
    out.write_text("good")
    with pytest.raises(ValueError):
        with atomic_outputs(out) as (temporary,):
            open(temporary, "w").write("bad")
            raise ValueError("the check failed")
    assert out.read_text() == "good" and os.listdir(tmp_path) == ["out.cfg"]


def test_a_write_error_without_strerror_still_says_what_went_wrong(tmp_path):
    # numpy's tofile raises OSError(errno, ...) forms without strerror on a full disk: the
    # message said "cannot write: None".
    with pytest.raises(OutputError) as caught:
        with atomic_outputs(tmp_path / "out.jpg") as (temporary,):
            raise OSError(errno.ENOSPC, None)
    assert str(caught.value).endswith("out.jpg: cannot write: No space left on device")


def test_an_output_folder_removes_only_the_levels_it_created_and_only_if_empty(tmp_path):
    folder = OutputFolder(tmp_path / "a" / "b" / "c")
    folder.make()
    assert (tmp_path / "a" / "b" / "c").is_dir()
    folder.remove_if_unused()
    assert os.listdir(tmp_path) == []
    (tmp_path / "a").mkdir()
    folder = OutputFolder(tmp_path / "a" / "b")
    folder.make()
    (tmp_path / "a" / "b" / "kept.jpg").write_text("x")
    folder.remove_if_unused()
    assert (tmp_path / "a" / "b" / "kept.jpg").exists()


def test_an_output_folder_that_is_a_file_is_one_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="output folder is a file"):
        OutputFolder(tmp_path / "f" / "out").make()


def test_a_symlink_loop_is_named_as_such_not_as_missing(tmp_path):
    loop = tmp_path / "loop.cfg"
    loop.symlink_to(loop)
    with pytest.raises(CfgError, match="loop.cfg: a symbolic link loop"):
        check_readable(str(loop), "cfg")
    dangling = tmp_path / "dangling.cfg"
    dangling.symlink_to(tmp_path / "gone.cfg")
    with pytest.raises(CfgError, match="dangling.cfg: a symbolic link to .*gone.cfg, which does not exist"):
        check_readable(str(dangling), "cfg")
