"""haproxy and stunnel for one instance: render, check, start, reload, stop.

haproxy runs master-worker (-W) with its pid file and output in the instance
folder; SIGUSR2 to the master reloads without dropping a connection, and a
failed reload leaves the old worker serving. stunnel has no check mode: it is
started (it forks once its listeners are bound) or sent SIGHUP, and its log
says whether the new configuration took.
"""
import os
import re
import signal
import subprocess
import time

from . import commands, files, processes
from ..errors import ServerError
from ..layout import (CERTIFICATES_NAME, CUSTOM503_NAME, MASTER_SOCKET_NAME,
                      STUNNEL_LISTENERS_NAME as LISTENERS_NAME)


class DaemonFailed(Exception):
    """The daemon refused a configuration; output is what it said."""

    def __init__(self, message, output=""):
        super().__init__(message)
        self.output = output


class Daemon:
    name = None
    process_names = ()
    soft_stop_signal = signal.SIGTERM

    def __init__(self, instance, config):
        self.instance = instance
        self.config = config
        self.binary = config.get("programs", self.name)
        self.rendered_path = instance.rendered(self.name)
        self.pid_file = instance.pid_file(self.name)
        self.log_path = instance.log(self.name)
        self.start_timeout = config.number("daemons", "start_timeout")
        self.stop_timeout = config.number("daemons", "stop_timeout")

    def render(self, template):
        """The template with {MYIP} and {INSTANCE_DIR} filled in."""
        from ..configscan import fill

        return fill(template, self.instance.dir, self.config.get("api", "management_address"))

    def process(self):
        return processes.live_process(self.pid_file, self.process_names, self.rendered_path)

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
        _remove(self.pid_file)
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


class Haproxy(Daemon):
    name = "haproxy"
    process_names = ("haproxy",)
    soft_stop_signal = signal.SIGUSR1  # listeners close, open connections finish

    SUCCESS = "Loading success."
    FAILURE = "Loading failure!"

    def check(self, path):
        """haproxy -c on path (a file in the instance folder), confined: as
        nobody, with no network, seeing a copy of the instance's own files
        (system/confinement.py) unless [daemons] confine_checks is off.
        Measured here: about 10 ms more than a bare check."""
        # -V: a config's `quiet` would silence the checker's verdict too.
        # In the instance folder, as the daemon runs: relative paths read the same.
        argv = [self.binary, "-c", "-V", "-f", path]
        if not self.config.flag("daemons", "confine_checks"):
            result = commands.run(argv, timeout=self.start_timeout, cwd=self.instance.dir)
        else:
            from .confinement import Confinement, ConfinementFailed

            try:
                confinement = Confinement(self.instance.dir, [
                    os.path.relpath(path, self.instance.dir), CERTIFICATES_NAME, CUSTOM503_NAME])
            except ConfinementFailed as failure:
                raise ServerError("haproxy's check could not be confined: %s" % failure)
            with confinement:
                result = commands.run(argv, timeout=self.start_timeout,
                                      confinement=confinement)
        if result.returncode not in (0, 1, 2):
            # 1 (errors) and 2 (valid but no listener, will not start) are
            # haproxy's verdicts on the config; anything else is haproxy failing.
            raise ServerError("%s -c failed (exit %d): %s" % (
                self.binary, result.returncode, " ".join(result.output.split())[:300]))
        return result.ok, result.output

    def start(self):
        offset = self._log_size()
        _remove(self.pid_file)
        _remove(self.instance.master_socket)
        # -db and -V: a config's own `daemon` or `quiet` would hide the master
        # from us or silence its messages. -S: the master CLI, the verdict
        # channel (the log is not one: end users' requests can write into it
        # through `log stdout`). Relative: a socket path has 108 bytes at most,
        # and the daemon runs in the instance folder.
        daemon = commands.spawn([self.binary, "-W", "-db", "-V",
                                 "-S", "unix@" + MASTER_SOCKET_NAME,
                                 "-f", self.rendered_path, "-p", self.pid_file],
                                self.log_path, cwd=self.instance.dir)
        deadline = time.monotonic() + self.start_timeout
        state = None
        while daemon.poll() is None and time.monotonic() < deadline:
            state = self.master_state()
            if state is not None and state.workers:
                break
            time.sleep(0.02)
        if state is None or not state.workers or daemon.poll() is not None:
            timed_out = daemon.poll() is None
            if timed_out:
                daemon.kill()
                daemon.wait(2)
            try:
                daemon.logger.wait(2)  # its last words are still in the pipe
            except subprocess.TimeoutExpired:
                pass
            text = self._log_since(offset)
            if timed_out:
                raise DaemonFailed("haproxy did not start within %gs" % self.start_timeout, text)
            raise DaemonFailed("haproxy failed to start", text)
        self._wait_ready(processes.process_of(daemon.pid))
        return self._message("started", daemon.pid)

    def master_state(self):
        """The master's answer to `show proc`: reload counters and workers, or
        None when its CLI does not answer (not running, or re-executing)."""
        answer = master_cli(self.instance.dir, "show proc")
        return MasterState.parse(answer) if answer is not None else None

    def stop(self):
        process = self.process()
        if process is not None:
            self._wait_ready(process)  # else the soft stop's SIGUSR1 may be lost
        stopped = super().stop()
        _remove(self.instance.master_socket)  # haproxy leaves it behind
        return stopped

    def _wait_ready(self, process):
        """Wait until the master handles signals again. After each (re)load it
        re-executes itself, and for a few milliseconds a SIGUSR1 or SIGUSR2
        sent to it is lost."""
        if process is None:
            return
        deadline = time.monotonic() + self.start_timeout
        while not processes.catches_signal(process, signal.SIGUSR2) \
                and processes.is_alive(process) and time.monotonic() < deadline:
            time.sleep(0.005)

    def reload(self, process):
        """SIGUSR2 to the master; the verdict is the master's failed-reload
        counter once its reload counter has moved. A master started without
        the CLI (by an older API) is judged by its log as before."""
        self._wait_ready(process)
        offset = self._log_size()
        before = self.master_state()
        processes.send_signal(process, signal.SIGUSR2)
        if before is None:
            return self._reload_verdict_from_log(process, offset)
        deadline = time.monotonic() + self.start_timeout
        after = None
        while processes.is_alive(process) and time.monotonic() < deadline:
            after = self.master_state()
            if after is not None and after.reloads > before.reloads:
                break
            time.sleep(0.02)
        self._wait_ready(process)
        text = self._log_since(offset)
        if after is None or after.reloads <= before.reloads:
            if processes.is_alive(process):
                raise DaemonFailed("haproxy did not reload within %gs" % self.start_timeout,
                                   text)
            raise DaemonFailed("haproxy failed to reload", text)
        if after.failed > before.failed:
            raise DaemonFailed("haproxy failed to reload", text)
        return self._message("reloaded", process.pid)

    def _reload_verdict_from_log(self, process, offset):
        marker, text = self._wait_for_log(offset, [self.SUCCESS, self.FAILURE],
                                          lambda: processes.is_alive(process))
        self._wait_ready(process)
        if marker == self.SUCCESS:
            return self._message("reloaded", process.pid)
        if marker is None and processes.is_alive(process):
            raise DaemonFailed("haproxy did not reload within %gs" % self.start_timeout, text)
        raise DaemonFailed("haproxy failed to reload", text)


    # `set ssl cert` travels in one CLI buffer (tune.bufsize, 16 KiB unless a
    # config raises it); a bigger certificate bundle goes by reload instead.
    RUNTIME_PAYLOAD_LIMIT = 15000

    def replace_certificate(self, path, pem):
        """Serve a new certificate without a reload, through haproxy's runtime
        API (`set ssl cert` and `commit ssl cert` on the worker, by the master
        CLI): no listener moves, no connection is touched. The answer's line;
        None when this haproxy does not hold the file as a certificate of its
        own (then a reload must read it); DaemonFailed when haproxy refuses
        it, its memory unchanged.

        The caller has checked that key and certificate match: haproxy 2.6
        breaks live connections when it refuses a commit for a mismatch."""
        process = self.process()
        loaded = self.loaded_certificates()
        if process is None or loaded is None or path not in loaded["certificates"] \
                or path in loaded["ca_files"]:
            return None  # a reload reads it (a CA file swapped as a certificate would not)
        # Between blocks only blank lines can stand, and one ends the payload.
        payload = "".join(line + "\n" for line in pem.decode("ascii", "replace").splitlines()
                          if line.strip())
        command = "@1 set ssl cert %s <<\n%s" % (path, payload)  # the CLI adds the empty line
        if len(command) > self.RUNTIME_PAYLOAD_LIMIT:
            return None
        # One transaction per haproxy: close the one a killed request left.
        for open_path in loaded["transactions"]:
            master_cli(self.instance.dir, "@1 abort ssl cert %s" % open_path)
        answer = master_cli(self.instance.dir, command, timeout=self.start_timeout)
        if answer is None or not answer.startswith(("Transaction created",
                                                    "Transaction updated")):
            # Nothing live has changed: a reload decides (a payload past a
            # smaller tune.bufsize, haproxy's parser disagreeing with ours).
            master_cli(self.instance.dir, "@1 abort ssl cert %s" % path)
            return None
        answer = master_cli(self.instance.dir, "@1 commit ssl cert %s" % path,
                            timeout=self.start_timeout)
        if answer is None or "\nSuccess!" not in answer:
            master_cli(self.instance.dir, "@1 abort ssl cert %s" % path)
            failure = "haproxy refused the certificate"
            self.record_outcome("failed: %s" % failure)
            raise DaemonFailed(failure, (answer or "no answer").strip())
        message = "%s daemon for %s took %s without a reload (pid %d)" % (
            self.name, self.instance.id, os.path.basename(path), process.pid)
        self.record_outcome(message)
        return message

    def serves_certificate(self, path, pem):
        """Whether the running worker holds pem's certificate under path (by
        its SHA-1 fingerprint, as `show ssl cert <path>` gives it); None when
        the CLI cannot say."""
        import base64
        import hashlib

        answer = master_cli(self.instance.dir, "@1 show ssl cert %s" % path)
        found = [line.split(":", 1)[1].strip() for line in (answer or "").splitlines()
                 if line.startswith("SHA1 FingerPrint:")]
        begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
        if not found or begin not in pem:
            return None
        body = pem[pem.index(begin) + len(begin):pem.index(end, pem.index(begin))]
        leaf = hashlib.sha1(base64.b64decode(b"".join(body.split()))).hexdigest()
        return found[0].upper() == leaf.upper()

    def loaded_certificates(self):
        """What the running worker holds, or None when its CLI does not answer:
        {"certificates": [path], "transactions": [path of an open one],
        "ca_files": [CA and CRL files]}."""
        found = {"certificates": [], "transactions": [], "ca_files": []}
        for command, key in (("show ssl cert", "certificates"), ("show ssl ca-file", "ca_files"),
                             ("show ssl crl-file", "ca_files")):
            answer = master_cli(self.instance.dir, "@1 " + command)
            if answer is None:
                return None
            section = None
            for line in answer.splitlines():
                line = line.strip()
                if line.startswith("#"):
                    section = line.strip("# ")
                elif line and key == "certificates" and section == "transaction":
                    found["transactions"].append(line.lstrip("*"))
                elif line and line.startswith("/"):
                    found[key].append(line.split(" - ")[0])
        return found


class MasterState:
    """haproxy 2.6's `show proc`: the master's reload and failed-reload counters
    ("1 [failed: 0]") and the current workers' pids."""

    MASTER = re.compile(r"^\d+\s+master\s+(\d+)(?:\s+\[failed: (\d+)\])?")
    WORKER = re.compile(r"^(\d+)\s+worker\b")

    def __init__(self, reloads, failed, workers):
        self.reloads, self.failed, self.workers = reloads, failed, workers

    @classmethod
    def parse(cls, text):
        reloads = failed = None
        workers, section = [], None
        for line in text.splitlines():
            if line.startswith("#"):
                section = line.strip("# ").split()[0] if line.strip("# ") else None
                continue
            master = cls.MASTER.match(line)
            if master:
                reloads, failed = int(master.group(1)), int(master.group(2) or 0)
            worker = cls.WORKER.match(line)
            if worker and section == "workers":
                workers.append(int(worker.group(1)))
        return cls(reloads, failed, workers) if reloads is not None else None


def master_cli(instance_dir, command, timeout=1.0):
    """One command on haproxy's master CLI in instance_dir; its answer, or None.
    Connected through /proc/self/fd: the absolute path may be longer than a
    unix socket address allows."""
    import socket

    try:
        directory = os.open(instance_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect("/proc/self/fd/%d/%s" % (directory, MASTER_SOCKET_NAME))
            client.sendall(command.encode() + b"\n")
            client.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                chunk = client.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(directory)


class Stunnel(Daemon):
    name = "stunnel"
    process_names = ("stunnel4", "stunnel")

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
        _remove(self.pid_file)
        listeners = self._listeners()
        sockets = self._bind(listeners) if listeners is not None else []
        try:
            # stunnel forks once its listeners are ready: its exit code is the verdict.
            result = commands.run([self.binary, self.rendered_path], timeout=self.start_timeout,
                                  cwd=self.instance.dir, sockets=sockets)
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
            stripped = line.strip()
            if stripped.startswith("["):
                section = stripped[1:].split("]")[0]
            elif "=" in stripped and not stripped.startswith((";", "#")):
                key, value = (part.strip() for part in stripped.split("=", 1))
                if key.lower() != "accept":
                    continue
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
            _remove(path)
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
        _remove(self.instance.dir + "/" + LISTENERS_NAME)
        return stopped

    def _wait_for_pid_file(self):
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            process = self.process()
            if process is not None:
                return process
            time.sleep(0.02)
        return None


DAEMONS = {"haproxy": Haproxy, "stunnel": Stunnel}


def daemon_for(service, instance, config):
    return DAEMONS[service](instance, config)


STUNNEL_LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5,
                  "info": 6, "debug": 7}


def _global_debug_level(text):
    """The level of the global section's `debug = [facility.]level` (default 5)."""
    level = 5
    for line in text.splitlines():
        if line.lstrip().startswith("["):
            break
        key, equals, value = line.partition("=")
        if equals and key.strip() == "debug":
            value = value.split(";")[0].strip().rpartition(".")[2].lower()
            level = int(value) if value.isdigit() else STUNNEL_LEVELS.get(value, level)
    return level


def _stunnel_errors(output):
    """stunnel's start-up output is mostly debug chatter; its errors are the lines worth reading."""
    lines = [line for line in output.splitlines()
             if line.startswith("[!]") or "LOG3[" in line or "failed" in line.lower()]
    return "\n".join(lines) if lines else output.strip()


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
