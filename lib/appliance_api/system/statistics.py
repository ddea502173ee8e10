"""Machine figures for /status, read from /proc, computed without sleeping.

Rates compare the counters with the sample the previous call stored in the
state folder (or with zero at boot when there is none), over CLOCK_BOOTTIME,
which every process shares and which restarts at zero on a reboot. Standard
library only: psutil would cost every /status call more than all the rest.
"""
import json
import os
import time

from ..layout import status_sample_path
from . import files


def take_sample(config, proc="/proc"):
    names = config.words("status", "network_interfaces")
    counters = network_counters(proc)
    if names == ["all"]:
        names = [name for name in counters if name != "lo"]
    user, nice, system, idle, iowait, irq, softirq, steal = cpu_seconds(proc)
    return {
        "time": time.clock_gettime(time.CLOCK_BOOTTIME),
        "tx": sum(counters[n][1] for n in names if n in counters),
        "rx": sum(counters[n][0] for n in names if n in counters),
        "user": user + nice,
        "system": system,
        "softirq": softirq,
        # guest time is already inside user and nice
        "cpu_total": user + nice + system + idle + iowait + irq + softirq + steal,
    }


def network_counters(proc="/proc"):
    """{interface: (bytes received, bytes sent)} from /proc/net/dev (this
    process's network namespace)."""
    counters = {}
    with open(os.path.join(proc, "net", "dev")) as file:
        for line in file.readlines()[2:]:
            name, _, figures = line.partition(":")
            fields = figures.split()
            if len(fields) >= 9:
                counters[name.strip()] = (int(fields[0]), int(fields[8]))
    return counters


def cpu_seconds(proc="/proc"):
    """user, nice, system, idle, iowait, irq, softirq, steal: seconds, all CPUs."""
    with open(os.path.join(proc, "stat")) as file:
        fields = file.readline().split()
    ticks = [int(field) for field in fields[1:9]]
    ticks += [0] * (8 - len(ticks))
    per_second = os.sysconf("SC_CLK_TCK")
    return [tick / per_second for tick in ticks]


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


def stored_sample(config):
    """The sample the last /status stored, or None (none yet, unreadable)."""
    try:
        with open(status_sample_path(config.state_dir)) as file:
            previous = json.load(file)
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) else None


def sample_rates(config):
    """Rates since the last stored sample; this call's sample becomes the next one's base."""
    path = status_sample_path(config.state_dir)
    previous = stored_sample(config)
    current = take_sample(config)
    try:
        os.makedirs(config.state_dir, exist_ok=True)
        # Not fsynced: a sample lost in a power cut costs one answer its baseline.
        files.write_atomic(path, json.dumps(current).encode(), durable=False)
    except OSError:
        pass  # a read-only state folder costs the next call its baseline, not this answer
    return rates(current, previous)


def hostname():
    return os.uname().nodename  # what gethostname() returns, without importing socket


def load():
    return ["%.2f" % figure for figure in os.getloadavg()]
