"""Machine figures for /status, from psutil, computed without sleeping.

Rates compare the counters with the sample the previous call stored in the
state folder (or with zero at boot when there is none), over CLOCK_BOOTTIME,
which every process shares and which restarts at zero on a reboot.
"""
import json
import os
import socket
import time

import psutil

from ..layout import status_sample_path
from . import files


def take_sample(config):
    names = config.words("status", "network_interfaces")
    counters = psutil.net_io_counters(pernic=True)
    if names == ["all"]:
        names = [name for name in counters if name != "lo"]
    cpu = psutil.cpu_times()
    return {
        "time": time.clock_gettime(time.CLOCK_BOOTTIME),
        "tx": sum(counters[n].bytes_sent for n in names if n in counters),
        "rx": sum(counters[n].bytes_recv for n in names if n in counters),
        "user": cpu.user + getattr(cpu, "nice", 0.0),
        "system": cpu.system,
        "softirq": getattr(cpu, "softirq", 0.0),
        "cpu_total": sum(cpu),
    }


def rates(current, previous):
    """Network bytes/s and CPU percentages between two samples.

    A missing, unreadable or newer-than-now previous sample (a reboot), or a
    counter that went backwards (an interface re-created), means: since boot."""
    zero = dict.fromkeys(current, 0.0)
    if not previous or set(previous) != set(current) or previous["time"] >= current["time"] \
            or any(previous[k] > current[k] for k in current):
        previous = zero
    seconds = current["time"] - previous["time"]
    cpu_total = current["cpu_total"] - previous["cpu_total"]

    def percent(key):
        return 100.0 * (current[key] - previous[key]) / cpu_total if cpu_total > 0 else 0.0

    return {
        "network_tx": (current["tx"] - previous["tx"]) / seconds if seconds > 0 else 0.0,
        "network_rx": (current["rx"] - previous["rx"]) / seconds if seconds > 0 else 0.0,
        "user_cpu": percent("user"),
        "system_cpu": percent("system"),
        "software_irq": percent("softirq"),
    }


def sample_rates(config):
    """Rates since the last stored sample; this call's sample becomes the next one's base."""
    path = status_sample_path(config.state_dir)
    try:
        with open(path) as file:
            previous = json.load(file)
    except (OSError, ValueError):
        previous = None
    current = take_sample(config)
    try:
        os.makedirs(config.state_dir, exist_ok=True)
        files.write_atomic(path, json.dumps(current).encode())
    except OSError:
        pass  # a read-only state folder costs the next call its baseline, not this answer
    return rates(current, previous if isinstance(previous, dict) else None)


def hostname():
    return socket.gethostname()


def load():
    return ["%.2f" % figure for figure in os.getloadavg()]
