"""Reading a daemon's verdict from its log survives logrotate's copytruncate."""
import os

from appliance_api.layout import Instance
from appliance_api.system.haproxy import Haproxy


def test_a_log_truncated_since_the_offset_is_read_from_its_start(config, instance_id):
    instance = Instance(config.state_dir, instance_id)
    daemon = Haproxy(instance, config)
    os.makedirs(instance.dir)
    with open(daemon.log_path, "w") as log:
        log.write("old line\n" * 100)
    offset = daemon._log_size()
    assert daemon._log_since(offset) == ""
    with open(daemon.log_path, "w") as log:  # what copytruncate leaves, then a new line
        log.write("Loading success.\n")
    assert daemon._log_since(offset) == "Loading success.\n"
    with open(daemon.log_path, "a") as log:
        log.write("more\n")
    assert daemon._log_since(len("Loading success.\n")) == "more\n"


def test_health_skips_an_instance_in_the_middle_of_a_change(config, instance_id):
    """keepalived's check must not move every tenant's addresses because one
    instance's haproxy is starting or reloading under its lock."""
    import fcntl

    from appliance_api.health import problems

    instance = Instance(config.state_dir, instance_id)
    os.makedirs(instance.dir)
    with open(instance.template("haproxy"), "w") as file:
        file.write("global\n")
    assert problems(config.state_dir) == ["%s: haproxy is not running" % instance_id]
    lock = os.open(instance.lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        assert problems(config.state_dir) == []
    finally:
        os.close(lock)
    assert problems(config.state_dir) == ["%s: haproxy is not running" % instance_id]
