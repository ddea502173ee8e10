"""Waiting for something the system does by itself (a daemon, a VRRP peer)."""
import time


def eventually(probe, timeout=3, interval=0.05):
    """probe() until it returns something true; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
