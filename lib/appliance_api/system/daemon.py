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

    def adopt_orphan(self):
        """A daemon running this instance's rendered config that no pid file
        names (the file deleted or overwritten by hand): its pid file is
        written back and its process returned, so that nothing starts a
        second daemon on the same config. None when there is none. Looked
        for by command line (a walk over every process) only when one may
        exist: orphan_possible()."""
        if not os.path.exists(self.rendered_path) or not self.orphan_possible():
            return None
        process = processes.find_by_config(self.process_names, self.rendered_path)
        if process is None:
            return None
        files.write_atomic(self.pid_file, b"%d\n" % process.pid, durable=False)
        return process

    def orphan_possible(self):
        """No pid file, or one written since this machine (its PID 1) started:
        a pid file from before a reboot names nothing of ours, and the walk
        at every boot, for every tenant, would cost seconds."""
        try:
            written = os.stat(self.pid_file).st_mtime
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return written >= processes.machine_started()

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
