"""What every daemon of an instance has in common: render its template, keep
its pid file and log in the instance folder, start or reload it (apply),
record the outcome for `octctl show`, and stop it. The daemon kinds are
system/haproxy.py and system/stunnel.py; system/daemons.py picks one.
"""
import os
import signal
import time

from . import files, processes
from ..layout import PROCESS_NAMES, fill_template


class DaemonFailed(Exception):
    """The daemon refused a configuration; output is what it said."""

    def __init__(self, message, output=""):
        super().__init__(message)
        self.output = output


class Daemon:
    name = None
    soft_stop_signal = signal.SIGTERM

    def __init__(self, instance, config):
        self.process_names = PROCESS_NAMES[self.name]
        self.instance = instance
        self.config = config
        self.binary = config.get("programs", self.name)
        self.rendered_path = instance.rendered(self.name)
        self.pid_file = instance.pid_file(self.name)
        self.log_path = instance.log(self.name)
        self.start_timeout = config.number("daemons", "start_timeout")
        # Its systemd scope's name, where systemd is PID 1 (commands.in_scope).
        self.scope = "appliance-%s-%s" % (self.name, instance.id)
        self.stop_timeout = config.number("daemons", "stop_timeout")

    def render(self, template):
        """The template with {MYIP} and {INSTANCE_DIR} filled in."""
        return fill_template(template, self.instance.dir,
                             self.config.get("api", "management_address"))

    # A file whose presence means a missing pid file may be a reload rewriting it.
    reloading_marker = None

    def process(self):
        return processes.live_process(self.pid_file, self.process_names, self.rendered_path,
                                      self.reloading_marker)

    def check(self, path):
        """Check a rendered config before it replaces the running one: (ok, output)."""
        return True, ""

    def apply(self, keep_outcome=True):
        """Run the rendered config: reload the daemon if it runs, else start it.
        The outcome is kept for `octctl show`, but not a rollback's: after a
        failed change the record says that the change failed."""
        process = self.process()
        try:
            message = self.start() if process is None else self.reload(process)
        except DaemonFailed as failure:
            if keep_outcome:
                self.record_outcome("failed: %s" % failure)
            raise
        if keep_outcome:
            self.record_outcome(message)
        return message

    def record_outcome(self, message):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            files.write_atomic(self.instance.outcome(self.name),
                               ("%s %s\n" % (stamp, message)).encode(), durable=False)
        except OSError:
            pass  # a record for people (a full disk, say) must not fail the change

    def stop(self):
        """Soft stop, then kill after stop_timeout; True if a daemon was running.
        A pid file that cannot say (replaced, unreadable) does not leave the
        daemon running: it is then found by its command line."""
        process = self.process()
        if process is None and (os.path.exists(self.pid_file)
                                or os.path.exists(self.rendered_path)):
            process = processes.find_by_config(self.process_names, self.rendered_path)
        stopped = process is not None and processes.stop(
            process, self.soft_stop_signal, self.stop_timeout)
        files.remove(self.pid_file)
        return stopped

    def killed_message(self):
        return "%s daemon %s killed." % (self.name, self.instance.id)

    def _message(self, verb, pid):
        return "%s daemon for %s %s (pid %d)" % (self.name, self.instance.id, verb, pid)

    def _log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0

    def _log_since(self, offset):
        """What the daemon logged after offset. logrotate's copytruncate may
        have emptied the file since offset was taken: then all of it is new."""
        try:
            with open(self.log_path, "rb") as log:
                if os.fstat(log.fileno()).st_size >= offset:
                    log.seek(offset)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _wait_for_log(self, offset, markers, still_alive):
        """Poll the log until a line holds one of markers; (marker or None, new text)."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            text = self._log_since(offset)
            for marker in markers:
                if marker in text:
                    return marker, text
            if not still_alive() or time.monotonic() > deadline:
                return None, self._log_since(offset)
            time.sleep(0.02)
