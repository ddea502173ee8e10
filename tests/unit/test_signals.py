"""A SIGTERM during a change ends the process only once the change is done
(system/signals.py), and the daemons a change starts still die of SIGTERM.
A change is the time a request holds its instance's lock: one still waiting
for it ends at once, having changed nothing."""
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT

SCRIPT = """
import os, signal, subprocess, sys, time
sys.path.insert(0, %r)
from appliance_api.system.signals import terminate_after_change
with terminate_after_change():
    daemon = subprocess.Popen(["sleep", "30"], stdout=subprocess.DEVNULL)  # as haproxy is
    print(daemon.pid, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.3)  # the rest of the change
    print("change done")  # buffered (a pipe): flushed before the process ends
print("after the change", flush=True)
"""


def test_sigterm_mid_change_ends_the_process_after_the_change():
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    run = subprocess.run([sys.executable, "-c", SCRIPT % os.path.join(ROOT, "lib")],
                         stdout=subprocess.PIPE, text=True, timeout=20, env=buffered)
    daemon_pid, *rest = run.stdout.split("\n")
    assert rest == ["change done", ""]  # not "after the change": it ended right there
    assert run.returncode == -signal.SIGTERM
    # The daemon inherited the default disposition, not an ignored SIGTERM.
    os.kill(int(daemon_pid), signal.SIGTERM)
    deadline = time.monotonic() + 5
    while os.path.exists("/proc/%s" % daemon_pid):
        with open("/proc/%s/stat" % daemon_pid) as stat:
            if stat.read().rpartition(")")[2].split()[0] == "Z":
                break  # dead, not yet reaped by init
        assert time.monotonic() < deadline, "the daemon ignored SIGTERM"
        time.sleep(0.05)


def test_outside_a_change_sigterm_ends_the_process_at_once():
    script = ("import os, signal, sys, time\nsys.path.insert(0, %r)\n"
              "from appliance_api.system.signals import terminate_after_change\n"
              "with terminate_after_change():\n    pass\n"
              "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(5)\nprint('still here')\n"
              % os.path.join(ROOT, "lib"))
    run = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                         timeout=20)
    assert (run.returncode, run.stdout) == (-signal.SIGTERM, "")


LOCKED_CHANGE = """
import sys, time
sys.path.insert(0, %r)
from appliance_api.layout import Instance
from appliance_api.system.locks import instance_lock
instance = Instance(%r, "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c")
with instance_lock(instance, create=True):
    print("locked", flush=True)
    time.sleep(0.5)
    with open(instance.custom503, "w") as page:  # the change
        page.write("new")
print("after", flush=True)
"""


def start_locked_change(state_dir):
    return subprocess.Popen([sys.executable, "-c", LOCKED_CHANGE % (os.path.join(ROOT, "lib"),
                                                                    str(state_dir))],
                            stdout=subprocess.PIPE, text=True)


def test_sigterm_while_waiting_for_the_lock_ends_the_request_before_any_change(state_dir):
    """lighttpd's read-timeout: the request it gave up on must not land later,
    perhaps over the retry the controller sent after the 504."""
    import fcntl

    from appliance_api.layout import Instance

    instance = Instance(str(state_dir), "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c")
    os.makedirs(instance.dir)
    with open(instance.lock_path, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another change holds the instance
        change = start_locked_change(state_dir)
        time.sleep(0.5)  # waiting in flock() by now
        change.send_signal(signal.SIGTERM)
        assert change.wait(5) == -signal.SIGTERM
    assert change.stdout.read() == ""
    assert not os.path.exists(instance.custom503)


def test_sigterm_while_holding_the_lock_ends_the_request_after_its_change(state_dir):
    from appliance_api.layout import Instance

    change = start_locked_change(state_dir)
    assert change.stdout.readline() == "locked\n"
    change.send_signal(signal.SIGTERM)
    assert change.wait(5) == -signal.SIGTERM
    assert change.stdout.read() == ""  # not "after": it ended as the lock was let go
    instance = Instance(str(state_dir), "7e9f91eb-b3e6-4e3b-a1a7-d6f7fdc1de7c")
    with open(instance.custom503) as page:
        assert page.read() == "new"


def test_off_the_main_thread_a_change_simply_runs():
    """Only the main thread may handle signals: elsewhere nothing is held,
    and an error in the change is the change's own (no chained ValueError)."""
    import threading

    from appliance_api.system.signals import terminate_after_change

    caught = []

    def change():
        try:
            with terminate_after_change():
                raise RuntimeError("the change failed")
        except RuntimeError as error:
            caught.append(error)

    thread = threading.Thread(target=change)
    thread.start()
    thread.join()
    assert [str(e) for e in caught] == ["the change failed"]
    assert caught[0].__context__ is None
