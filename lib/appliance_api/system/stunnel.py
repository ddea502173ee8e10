"""stunnel for one instance: render (with the options the API manages),
start on listeners the API binds and hands over, reload, stop.

stunnel has no check mode: it is started (it forks once its listeners are
bound) or sent SIGHUP, and its log says whether the new configuration took.
"""
import os
import re
import signal
import time

from . import commands, files, processes
from .daemon import Daemon, DaemonFailed
from ..configread import stunnel_line
from ..layout import STUNNEL_LISTENERS_NAME as LISTENERS_NAME


class Stunnel(Daemon):
    name = "stunnel"

    SUCCESS = "Configuration successful"
    NOTICE = 5
    FAILURES = ("Failed to reload the configuration file", "Configuration failed")
    # Only for a stunnel that binds its own listeners (see start).
    REBIND_SETTLE = 0.3
    REBIND_FAILED = re.compile(r"Binding service \[[^\]]*\] failed")

    def render(self, template):
        """Fill the template, then set the options the API manages (pid file,
        log, forking) last in the global section, where stunnel lets them win."""
        text = super().render(template)
        # log = append: the log the API reads reload verdicts from is never
        # truncated by stunnel, and logrotate's copytruncate works.
        managed = ("; managed by appliance-api\npid = %s\noutput = %s\nlog = append\n"
                   "foreground = no\n"
                   % (os.path.abspath(self.pid_file), os.path.abspath(self.log_path)))
        if _global_debug_level(text) < self.NOTICE:
            # A reload is confirmed by "Configuration successful", a notice.
            managed += "debug = %d\n" % self.NOTICE
        lines = text.splitlines(keepends=True)
        for index, line in enumerate(lines):
            if line.lstrip().startswith("["):
                return "".join(lines[:index]) + managed + "".join(lines[index:])
        return text + ("\n" if text and not text.endswith("\n") else "") + managed

    def start(self):
        """The API binds stunnel's listeners and hands them over (systemd's
        socket activation, which stunnel 5.68 is built with): stunnel then
        never closes them, and a reload (SIGHUP) keeps every listener open
        while it takes a new certificate. A config whose listeners cannot be
        handed over (a service with several accepts) binds them itself."""
        files.remove(self.pid_file)
        listeners = self._listeners()
        sockets = self._bind(listeners) if listeners is not None else []
        try:
            # stunnel forks once its listeners are ready: its exit code is the verdict.
            result = commands.run([self.binary, self.rendered_path], timeout=self.start_timeout,
                                  cwd=self.instance.dir, sockets=sockets, scope=self.scope)
        finally:
            for sock in sockets:
                sock.close()  # stunnel holds them now (or failed)
        if not result.ok:
            raise DaemonFailed("stunnel failed to start", _stunnel_errors(result.output))
        process = self._wait_for_pid_file()
        if process is None:
            raise DaemonFailed("stunnel exited right after starting",
                               _stunnel_errors(self._log_since(0)[-4000:]))
        self._record_listeners(listeners, process.pid)
        return self._message("started", process.pid)

    def reload(self, process):
        """SIGHUP. A stunnel holding listeners the API handed it, whose config
        keeps the same addresses in the same order, closes none. One whose
        handed-over listeners change is restarted on new ones: those it does
        not hold are bound first, so a taken port refuses the change with
        stunnel untouched. A stunnel that binds its own (started by an older
        API, or a service with two accepts) is reloaded as before: it rebinds
        them, and a failure shows in its log."""
        listeners = self._listeners()
        held = self._held_listeners(process.pid)
        endpoints = [endpoint for _service, endpoint in listeners or ()]
        if held is not None and (listeners is None or endpoints != held):
            return self._restart(process, listeners, held)
        offset = self._log_size()
        processes.send_signal(process, signal.SIGHUP)
        marker, text = self._wait_for_log(offset, (self.SUCCESS,) + self.FAILURES,
                                          lambda: processes.is_alive(process))
        if marker == self.SUCCESS and held is None:
            # It rebinds its own listeners after saying so: a failure shows
            # within this time (connections' own lines never say "Binding").
            time.sleep(self.REBIND_SETTLE)
            text = self._log_since(offset)
            if self.REBIND_FAILED.search(text):
                marker = None
        if marker == self.SUCCESS:
            return self._message("reloaded", process.pid)
        raise DaemonFailed("stunnel failed to reload", _stunnel_errors(text))

    def _restart(self, process, listeners, held):
        if listeners is not None:
            # Only a check: nothing else may hold a port the old stunnel does
            # not (its own are free once it stops).
            for sock in self._bind([l for l in listeners if l[1] not in held]):
                sock.close()
        processes.stop(process, self.soft_stop_signal, self.stop_timeout)
        return self.start().replace(" started ", " restarted ")

    def _listeners(self):
        """[(service, "address:port")] of the rendered config, in order, or
        None when they cannot be handed over (a service with two accepts, an
        accept before the first service)."""
        import ipaddress

        found, section = [], None
        with open(self.rendered_path, encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
        for line in lines:
            read = stunnel_line(line)
            if read is None:
                continue
            if read[0] == "section":
                section = read[1]
            elif read[1] == "accept":
                value = read[2]
                if section is None:
                    return None
                host, _, port = value.rpartition(":")
                host = host.strip("[]")
                try:
                    address = ipaddress.ip_address(host if host not in ("", "*") else "0.0.0.0")
                except ValueError:
                    return None
                if not port.isdigit() or any(name == section for name, _ in found):
                    return None
                found.append((section, "%s:%d" % (address, int(port))))
        return found

    def _bind(self, listeners):
        """Listening sockets for listeners; DaemonFailed naming the service
        (stunnel's own words) for one that cannot be bound."""
        import socket

        sockets = []
        try:
            for service, endpoint in listeners:
                address, _, port = endpoint.rpartition(":")
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sockets.append(sock)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((address, int(port)))
                    sock.listen(socket.SOMAXCONN)
                except OSError as error:
                    raise DaemonFailed("stunnel failed to start", "Binding service [%s] failed: "
                                       "%s (%s)" % (service, error.strerror, endpoint))
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets

    def _record_listeners(self, listeners, pid):
        """What the running stunnel holds, for the next reload to compare:
        its pid, then an address:port a line, in the order handed over."""
        path = self.instance.dir + "/" + LISTENERS_NAME
        if listeners is None:
            files.remove(path)
        else:
            lines = ["pid %d" % pid] + [endpoint for _service, endpoint in listeners]
            files.write_atomic(path, ("\n".join(lines) + "\n").encode(), durable=False)

    def _held_listeners(self, pid):
        """The addresses stunnel pid was handed, in order; None when it binds
        its own (no record, or a record of another stunnel's)."""
        text = files.read(self.instance.dir + "/" + LISTENERS_NAME)
        lines = text.decode("ascii", "replace").splitlines() if text else []
        if not lines or lines[0] != "pid %d" % pid:
            return None
        return lines[1:]

    def stop(self):
        stopped = super().stop()
        files.remove(self.instance.dir + "/" + LISTENERS_NAME)
        return stopped

    def _wait_for_pid_file(self):
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            process = self.process()
            if process is not None:
                return process
            time.sleep(0.02)
        return None


STUNNEL_LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5,
                  "info": 6, "debug": 7}


def _global_debug_level(text):
    """The level of the global section's `debug = [facility.]level` (default 5)."""
    level = 5
    for line in text.splitlines():
        read = stunnel_line(line)
        if read is None:
            continue
        if read[0] == "section":
            break
        if read[1] == "debug":
            value = read[2].rpartition(".")[2].lower()
            level = int(value) if value.isdigit() else STUNNEL_LEVELS.get(value, level)
    return level


def _stunnel_errors(output):
    """stunnel's start-up output is mostly debug chatter; its errors are the lines worth reading."""
    lines = [line for line in output.splitlines()
             if line.startswith("[!]") or "LOG3[" in line or "failed" in line.lower()]
    return "\n".join(lines) if lines else output.strip()
