"""atomic_dir: a folder is replaced as a whole, or not at all (issue 12, defect 5)."""

import pytest

import edgesp.atomic as atomic
from edgesp.atomic import atomic_dir


def _old(tmp_path):
    out = tmp_path / "build"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    (out / "only_old.bin").write_text("x")
    return out


@pytest.mark.parametrize("exchange", [True, False])
def test_success_replaces_the_whole_folder(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # the two-rename fallback
    out = _old(tmp_path)
    with atomic_dir(out) as tmp:
        assert tmp.parent == out.parent and tmp != out and not list(tmp.iterdir())
        (tmp / "manifest.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] and (out / "manifest.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["build"]  # no temporary siblings left


@pytest.mark.parametrize("exchange", [True, False])
def test_failure_midway_keeps_the_old_folder(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    out = _old(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        with atomic_dir(out) as tmp:
            (tmp / "manifest.json").write_text("new")
            raise OSError(28, "No space left on device")  # the fault: disk full midway
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "only_old.bin"]
    assert (out / "manifest.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["build"]


def test_new_folder_and_file_in_the_way(tmp_path):
    with atomic_dir(tmp_path / "a" / "b") as tmp:
        (tmp / "f").write_text("1")
    assert (tmp_path / "a" / "b" / "f").read_text() == "1"
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        with atomic_dir(tmp_path / "file"):
            pass
