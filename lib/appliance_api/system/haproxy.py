"""haproxy for one instance: a confined check, start, reload, stop, and
certificates swapped in its memory through the runtime API.

haproxy runs master-worker (-W) with its pid file and output in the instance
folder; SIGUSR2 to the master reloads without dropping a connection, and a
failed reload leaves the old worker serving. The master CLI (master.sock)
is the verdict channel: `show proc`'s reload counters say whether a reload took.
"""
import os
import signal
import subprocess
import time

from . import commands, files, haproxy_counters, processes
from .daemon import Daemon, DaemonFailed
from .haproxy_cli import MasterState, ask_many
from . import MachineError
from ..layout import CERTIFICATES_NAME, CRT_LISTS_NAME, CUSTOM503_NAME, MASTER_SOCKET_NAME


class Haproxy(Daemon):
    name = "haproxy"
    soft_stop_signal = signal.SIGUSR1  # listeners close, open connections finish

    @property
    def reloading_marker(self):
        return self.instance.master_socket  # it unlinks and rewrites its pid file on a reload

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
                    os.path.relpath(path, self.instance.dir), CERTIFICATES_NAME, CRT_LISTS_NAME,
                    CUSTOM503_NAME],
                    programs=[self.binary])
            except ConfinementFailed as failure:
                raise MachineError("haproxy's check could not be confined: %s" % failure)
            with confinement:
                result = commands.run(argv, timeout=self.start_timeout,
                                      confinement=confinement)
        if result.returncode not in (0, 1, 2):
            # 1 (errors) and 2 (valid but no listener, will not start) are
            # haproxy's verdicts on the config; anything else is haproxy failing.
            raise MachineError("%s -c failed (exit %d): %s" % (
                self.binary, result.returncode, " ".join(result.output.split())[:300]))
        return result.ok, result.output

    def start(self):
        offset = self._log_size()
        files.remove(self.pid_file)
        files.remove(self.instance.master_socket)
        # -db and -V: a config's own `daemon` or `quiet` would hide the master
        # from us or silence its messages. -S: the master CLI, the verdict
        # channel (the log is not one: end users' requests can write into it
        # through `log stdout`). Relative: a socket path has 108 bytes at most,
        # and the daemon runs in the instance folder.
        daemon = commands.spawn([self.binary, "-W", "-db", "-V",
                                 "-S", "unix@" + MASTER_SOCKET_NAME,
                                 "-f", self.rendered_path, "-p", self.pid_file],
                                self.log_path, cwd=self.instance.dir, scope=self.scope)
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

    def orphan_possible(self):
        """Only a master that answers on the instance's CLI socket: the
        socket a killed master leaves refuses at once, and a worker whose
        master died (it serves its last requests) is never adopted."""
        return self.master_state() is not None

    def master_state(self):
        """The master's answer to `show proc`: reload counters and workers, or
        None when its CLI does not answer (not running, or re-executing)."""
        answer = master_cli(self.instance.dir, "show proc")
        return MasterState.parse(answer) if answer is not None else None

    def stop(self):
        process = self.process()
        if process is not None:
            self._wait_ready(process)  # else the soft stop's SIGUSR1 may be lost
            self.keep_counters()
        stopped = super().stop()
        files.remove(self.instance.master_socket)  # haproxy leaves it behind
        return stopped

    def keep_counters(self):
        """The workers' counters into the instance's ledger (haproxy_counters.py)."""
        haproxy_counters.keep(self.instance.dir, self.config.number("stats", "cli_timeout"))

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
        self.keep_counters()  # the new worker starts at zero
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
        self.keep_counters()  # an old worker still draining, by its pid
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

    _LOADED_KEYS = {"cert": "certificates", "ca-file": "ca_files", "crl-file": "crl_files"}
    _KIND_NAMES = {"cert": "certificate", "ca-file": "CA file", "crl-file": "CRL"}

    def replace_certificate(self, path, pem):
        """Serve a new certificate, CA file or CRL without a reload, through
        haproxy's runtime API (`set ssl cert|ca-file|crl-file` and `commit`
        on the worker, by the master CLI; haproxy 2.6 takes all three): no
        listener moves, no connection is touched, the next handshake uses
        it. The answer's line; None when this haproxy does not hold the file
        as exactly one of them (then a reload must read it); DaemonFailed
        when haproxy refuses it, its memory unchanged.

        The caller has checked that key and certificate match: haproxy 2.6
        breaks live connections when it refuses a commit for a mismatch."""
        process = self.process()
        loaded = self.loaded_certificates()
        if process is None or loaded is None:
            return None
        # What haproxy holds the file as decides the runtime command; a file
        # it holds as two things (or as none) is read by a reload.
        held_as = [kind for kind in ("cert", "ca-file", "crl-file")
                   if path in loaded[self._LOADED_KEYS[kind]]]
        if len(held_as) != 1:
            return None
        kind = held_as[0]
        # Between blocks only blank lines can stand, and one ends the payload.
        payload = "".join(line + "\n" for line in pem.decode("ascii", "replace").splitlines()
                          if line.strip())
        command = "@1 set ssl %s %s <<\n%s" % (kind, path, payload)  # the CLI adds the empty line
        if len(command) > self.RUNTIME_PAYLOAD_LIMIT:
            return None
        # One transaction per haproxy and kind: close the one a killed request left.
        for open_kind, open_path in loaded["transactions"]:
            master_cli(self.instance.dir, "@1 abort ssl %s %s" % (open_kind, open_path))
        answer = master_cli(self.instance.dir, command, timeout=self.start_timeout)
        # "Transaction created for certificate ..." / "... for CA ..." / "... for CRL ...":
        # haproxy 2.6 writes the CA and CRL ones in lower case.
        if answer is None or not answer.lower().startswith(("transaction created",
                                                            "transaction updated")):
            # Nothing live has changed: a reload decides (a payload past a
            # smaller tune.bufsize, haproxy's parser disagreeing with ours).
            master_cli(self.instance.dir, "@1 abort ssl %s %s" % (kind, path))
            return None
        answer = master_cli(self.instance.dir, "@1 commit ssl %s %s" % (kind, path),
                            timeout=self.start_timeout)
        if answer is None or "\nSuccess!" not in answer:
            master_cli(self.instance.dir, "@1 abort ssl %s %s" % (kind, path))
            failure = "haproxy refused the %s" % self._KIND_NAMES[kind]
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
        {"certificates": [path], "ca_files": [path], "crl_files": [path],
        "transactions": [(kind, path) of an open one]}."""
        found = {"certificates": [], "transactions": [], "ca_files": [], "crl_files": []}
        for kind, key in self._LOADED_KEYS.items():
            answer = master_cli(self.instance.dir, "@1 show ssl " + kind)
            if answer is None:
                return None
            section = None
            for line in answer.splitlines():
                line = line.strip()
                if line.startswith("#"):
                    section = line.strip("# ")
                elif line and section == "transaction":
                    found["transactions"].append((kind, line.lstrip("*").split(" - ")[0]))
                elif line and line.startswith("/"):
                    found[key].append(line.split(" - ")[0])
        return found


def master_cli(instance_dir, command, timeout=1.0):
    """One command on haproxy's master CLI in instance_dir; its answer, or None."""
    return ask_many({instance_dir: (instance_dir, command)}, timeout)[instance_dir]
