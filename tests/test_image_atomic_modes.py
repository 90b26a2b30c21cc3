"""Files written through evos_nerf.io get the mode a plain open() would give them (umask), not mkstemp's 0600."""

import os
import stat

import pytest

from evos_nerf.io import atomic_path, current_umask, write_json, write_text


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_files_follow_the_umask_like_open(tmp_path, umask, mask, expected):
    umask(mask)
    write_json(tmp_path / "metrics.json", {"psnr": 30.0})
    write_text(tmp_path / "notes.txt", "hi")
    with atomic_path(tmp_path / "sub" / "model.ckpt", tmp_dir=tmp_path) as tmp:  # the checkpoint writer's form
        tmp.write_bytes(b"weights")
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("reference")
    for name in ("metrics.json", "notes.txt", "sub/model.ckpt", "plain.txt"):
        assert mode(tmp_path / name) == expected, name


def test_rewriting_a_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "config.json"
    path.write_text("{}")
    os.chmod(path, 0o640)
    write_json(path, {"a": 1})
    assert mode(path) == 0o640


def test_reading_the_umask_leaves_it_unchanged(umask):
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027


def test_failed_write_leaves_neither_file_nor_temp(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
