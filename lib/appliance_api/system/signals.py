"""A change runs to its end before a SIGTERM ends its process.

lighttpd sends SIGTERM to its CGI processes when it stops at once (a SIGTERM
to lighttpd, or its graceful stop running out of time) and when a script has
written nothing for cgi.limits' read-timeout; systemd sends one to `octctl
sync` when its run is stopped. A change ended there could leave a file
stored but never loaded, or a daemon stopped for a restart that never came.
Inside terminate_after_change() a SIGTERM is held: the change finishes, or
rolls back, and then the signal is delivered again, with whatever handling
was there before (by default, the process ends; its answer would have gone
nowhere: lighttpd no longer waits for it).

The handler is a Python one, not SIG_IGN: an ignored signal stays ignored
across exec, and every daemon started meanwhile would ignore SIGTERM too.
"""
import contextlib
import os
import signal
import sys


@contextlib.contextmanager
def terminate_after_change():
    received = []
    try:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
        held = True
    except ValueError:  # not the main thread, which alone may handle signals
        held = False
    try:
        yield
    finally:
        if held:
            # None: a handler not installed from Python; the default is the nearest.
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if received:
            sys.stdout.flush()  # octctl's lines: what was done is said first
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGTERM)
