"""system/files.py: files replaced atomically, temporaries a killed request left swept."""
import os
import stat

from appliance_api.system import files


def test_write_atomic_replaces_the_file_whole_with_its_mode(tmp_path):
    path = str(tmp_path / "x.pem")
    files.write_atomic(path, b"old", 0o600)
    files.write_atomic(path, b"new", 0o600)
    assert files.read(path) == b"new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [n for n in os.listdir(tmp_path) if n != "x.pem"] == []  # no temporary left


def test_restore_puts_back_what_was_there_or_removes_what_was_not(tmp_path):
    path = str(tmp_path / "f")
    files.write_atomic(path, b"changed")
    files.restore(path, b"before")
    assert files.read(path) == b"before"
    files.restore(path, None)
    assert not os.path.exists(path) and files.read(path) is None
    files.remove(path)  # twice is fine


def test_stale_temporaries_and_a_killed_checks_tree_are_swept_and_nothing_else(tmp_path):
    for name in (".haproxy.cfg.1234.tmp", "keep.tmp", ".hidden", "haproxy.cfg"):
        (tmp_path / name).write_text("x")
    tree = tmp_path / ".confined-99.tmp"
    (tree / "etc").mkdir(parents=True)
    files.remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [".hidden", "haproxy.cfg", "keep.tmp"]
    files.remove_stale_temporaries(str(tmp_path / "missing"))  # no folder: nothing to do
