"""system/locks.py: every lock of the appliance is a flock taken there."""
import os

from appliance_api.layout import Instance
from appliance_api.system import locks
from conftest import hold_in_another_process


def test_try_lock_takes_a_free_lock_and_gives_none_for_a_held_one(tmp_path):
    path = str(tmp_path / "sync.lock")
    fd = locks.try_lock(path)
    assert fd is not None and locks.held(path) is True  # by anyone, this process too
    assert locks.try_lock(path) is None  # a second open file: flock says taken
    os.close(fd)
    assert locks.held(path) is False
    child = hold_in_another_process(path)
    try:
        assert locks.held(path) is True
        assert locks.try_lock(path) is None
        assert locks.try_lock(path, patience=0.05) is None
    finally:
        child.stdin.close()
        child.wait()
    assert locks.held(path) is False
    os.close(locks.try_lock(path))


def test_an_instance_left_with_no_uploaded_file_loses_its_folder(state_dir, instance_id):
    instance = Instance(state_dir, instance_id)
    with locks.instance_lock(instance, create=True):
        assert os.path.isdir(instance.dir)
        with open(instance.pid_file("haproxy"), "w") as file:
            file.write("1\n")  # not an uploaded file
    assert not os.path.exists(instance.dir)


def test_an_instance_lock_without_a_folder_locks_nothing_and_makes_none(state_dir, instance_id):
    instance = Instance(state_dir, instance_id)
    with locks.instance_lock(instance, create=False):
        assert not os.path.exists(instance.dir)


def test_the_instance_lock_sweeps_a_killed_requests_temporaries(state_dir, instance_id):
    instance = Instance(state_dir, instance_id)
    os.makedirs(instance.dir)
    with open(instance.template("haproxy"), "w") as file:
        file.write("global\n")
    stale = os.path.join(instance.dir, ".haproxy.cfg.42.tmp")
    open(stale, "w").close()
    with locks.instance_lock(instance, create=False):
        assert not os.path.exists(stale)
