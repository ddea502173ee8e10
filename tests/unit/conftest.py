"""In-process tests: the WSGI application driven by webtest, no lighttpd.

lib/ and tools/ are put on the path so the tests run from a plain checkout,
under the venv's Python or Debian's /usr/bin/python3 alike.
"""
import os
import subprocess
import sys
import uuid

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
for folder in (os.path.join(ROOT, "lib"), os.path.join(ROOT, "tools")):
    if folder not in sys.path:
        sys.path.insert(0, folder)

# The environment lighttpd gives a request from a verified controller.
VERIFIED = {"SSL_CLIENT_VERIFY": "SUCCESS", "SSL_CLIENT_S_DN_CN": "controller", "HTTPS": "on"}


def make_config(state_dir, **sections):
    """A Config for state_dir: no network changes, every interface counted;
    sections={"api": {...}} override or add keys."""
    from appliance_api import config

    merged = {"paths": {"state_dir": state_dir}, "network": {"manage": "no"},
              "status": {"network_interfaces": "all"}}
    for section, values in sections.items():
        merged.setdefault(section, {}).update(values)
    text = "".join("[%s]\n" % name + "".join("%s = %s\n" % item for item in values.items())
                   for name, values in merged.items())
    return config.parse(text, "<test>")


@pytest.fixture
def state_dir(tmp_path):
    path = tmp_path / "state"
    path.mkdir()
    return str(path)


@pytest.fixture
def config(state_dir):
    return make_config(state_dir)


@pytest.fixture
def app(config):
    import webtest
    from appliance_api.app import make_application

    return webtest.TestApp(make_application(config), extra_environ=VERIFIED)


@pytest.fixture
def instance_id():
    return str(uuid.uuid4())


@pytest.fixture
def fake_daemons(tmp_path):
    """Start processes that look like a daemon to the pid-file check: a shell
    script named after the daemon, its command line naming the config file."""
    started = []
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()

    def start(name, config_path, pid_file):
        script = bin_dir / name
        if not script.exists():
            script.write_text("#!/bin/sh\nsleep 600\n")
            script.chmod(0o755)
        process = subprocess.Popen([str(script), config_path], start_new_session=True)
        with open(pid_file, "w") as file:
            file.write("%d\n" % process.pid)
        started.append(process)
        return process

    yield start
    for process in started:
        os.killpg(process.pid, 9)
        process.wait()


def hold_in_another_process(path):
    """A child holding path's lock until its stdin closes."""
    child = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys; fd = os.open(%r, os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()") % path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child
