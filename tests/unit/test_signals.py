"""A SIGTERM during a change ends the process only once the change is done
(system/signals.py), and the daemons a change starts still die of SIGTERM."""
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
    print("change done", flush=True)
print("after the change", flush=True)
"""


def test_sigterm_mid_change_ends_the_process_after_the_change():
    run = subprocess.run([sys.executable, "-c", SCRIPT % os.path.join(ROOT, "lib")],
                         stdout=subprocess.PIPE, text=True, timeout=20)
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
