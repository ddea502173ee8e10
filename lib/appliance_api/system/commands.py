"""Run a program with an argument list (never a shell) and collect what it said.

Every program starts with a clean environment (CLEAN_ENVIRONMENT): a daemon
must not see the request's CGI variables (a client certificate, the API's
config path), and haproxy's `env()` fetch would hand them to anyone.
"""
import os
import subprocess

from . import MachineError

CLEAN_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


class Result:
    def __init__(self, returncode, output):
        self.returncode = returncode
        self.output = output

    @property
    def ok(self):
        return self.returncode == 0


def run(argv, timeout=30, stdin=None, cwd=None, sockets=(), confinement=None, scope=None):
    """Run argv to completion; stdout and stderr together, as text.

    confinement: a system.confinement.Confinement to run argv in (as nobody,
    without network, seeing a copy of one instance's files); cwd is then the
    instance folder inside it.

    sockets: listening sockets handed over the way systemd's socket
    activation does (descriptors 3, 4, ... with LISTEN_FDS and LISTEN_PID),
    for a daemon that then never binds or rebinds them itself.

    scope: a daemon that forks into the background, started in a systemd
    scope of that name (in_scope).

    A program that is missing or cannot be executed is the appliance's
    problem, not the client's: MachineError (500) naming the program.
    """
    argv = in_scope(argv, scope)
    handover, moved = {"env": CLEAN_ENVIRONMENT}, []
    if confinement is not None:
        handover["preexec_fn"] = confinement.preexec
        cwd = None
    elif sockets:
        import fcntl
        import sys

        fds = [sock.fileno() for sock in sockets]
        # A socket on 0-2 (a caller with closed stdio) would be replaced by
        # the child's stdio before the hand-over: a copy above 2 goes instead.
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in fds if fd < 3]
        copies = iter(moved)
        fds = [fd if fd >= 3 else next(copies) for fd in fds]
        program = argv[argv.index("--") + 1] if scope and argv[0] == SYSTEMD_RUN else argv[0]
        if not os.access(program, os.X_OK):  # the exec step would only say it in a traceback
            raise MachineError("Program not %s: %s" % (
                "executable" if os.path.exists(program) else "found", program))
        # A small exec step puts them on 3, 4, ... and sets LISTEN_PID to its
        # own pid (the daemon's, after exec): no preexec_fn, which is not
        # safe in a process with threads (the supervisor's).
        argv = [sys.executable, "-I", "-S", "-c", HAND_OVER] + [str(fd) for fd in fds] + \
            ["--"] + list(argv)
        handover = {"env": CLEAN_ENVIRONMENT, "pass_fds": tuple(fds)}
    try:
        completed = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
            close_fds=True, cwd=cwd, **handover, **({"input": stdin.encode()}
                                                  if stdin is not None
                                                  else {"stdin": subprocess.DEVNULL}))
    except FileNotFoundError:
        raise MachineError("Program not found: %s" % argv[0])
    except PermissionError:
        raise MachineError("Program not executable: %s" % argv[0])
    except subprocess.TimeoutExpired:
        raise MachineError("Program timed out after %ds: %s" % (timeout, " ".join(argv)))
    except subprocess.SubprocessError as error:
        # preexec_fn failed in the child (a confinement that could not be made).
        raise MachineError("Program could not be started confined: %s (%s)" % (argv[0], error))
    finally:
        for fd in moved:
            os.close(fd)
    return Result(completed.returncode, completed.stdout.decode("utf-8", "replace"))


def spawn(argv, log_path, cwd=None, appender="/usr/bin/tee", scope=None):
    """Start a long-running daemon detached from this request: its own session,
    no inherited descriptors, its output appended to log_path. Returns the Popen.

    The output goes through a pipe to `tee -a`, which appends to log_path and
    exits when the daemon's last process does. haproxy sets O_NONBLOCK on its
    stdout with F_SETFL, which clears O_APPEND on a file handed to it directly:
    after logrotate's copytruncate it went on writing at its old offset,
    leaving the new file a hole of NULs as long as the old one.

    scope: started in a systemd scope of that name (in_scope), tee with it.
    """
    read_end, write_end = os.pipe()
    try:
        try:
            logger = subprocess.Popen([appender, "-a", log_path], stdin=read_end,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      close_fds=True, start_new_session=True)
        except OSError as error:
            raise MachineError("Program not usable: %s (%s)" % (appender, error.strerror))
        try:
            scoped = in_scope(argv, scope)
            daemon = subprocess.Popen(scoped, stdin=subprocess.DEVNULL, stdout=write_end,
                                      stderr=write_end, close_fds=True, start_new_session=True,
                                      cwd=cwd, env=CLEAN_ENVIRONMENT)
            daemon.logger = logger  # done writing the log once the daemon is gone
            if scoped is not argv:
                unit = next(word for word in scoped if word.startswith("--unit="))
                _join_scope(daemon.pid, unit[len("--unit="):], logger.pid)
            return daemon
        except OSError as error:
            logger.kill()
            if isinstance(error, FileNotFoundError):
                raise MachineError("Program not found: %s" % argv[0])
            raise MachineError("Program not executable: %s" % argv[0])
    finally:
        os.close(read_end)
        os.close(write_end)


# Where systemd is PID 1, every daemon the API starts goes into a scope of
# its own in appliance-tenants.slice (systemd-run --scope, which registers the
# scope and then execs the daemon in the same process): out of the control
# group of whoever started it (lighttpd.service, the supervisor, octctl sync),
# so that restarting or stopping those never touches a tenant, and systemd
# finds no "left-over process" in them. Elsewhere (make run, the tests) the
# daemon is started as it is. Supervision is the project's own either way
# (supervisor.py): one path, under systemd or not.
SYSTEMD_RUN = "/usr/bin/systemd-run"
BUSCTL = "/usr/bin/busctl"
SLICE = "appliance-tenants.slice"


def systemd_is_init():
    return os.path.isdir("/run/systemd/system") and os.access(SYSTEMD_RUN, os.X_OK)


def system_stopping():
    """Whether systemd is taking the machine down (or into another target):
    a daemon that exits now is being stopped, not crashing."""
    if not systemd_is_init():
        return False
    try:
        state = subprocess.run(["/usr/bin/systemctl", "is-system-running"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=5,
                               env=CLEAN_ENVIRONMENT).stdout.decode().strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return state == "stopping"


def in_scope(argv, scope):
    """argv run in a new scope named after scope (a unique suffix: the old
    scope of a crashed daemon may linger while its last processes drain)."""
    if scope is None or not systemd_is_init():
        return argv
    import time

    unit = "%s-%x.scope" % (scope, time.time_ns() & 0xffffffff)
    # Delegate=yes: systemd moves a process into a scope later (the daemon's
    # tee, _join_scope) only for a delegated one ("Process migration not
    # available on non-delegated units").
    return [SYSTEMD_RUN, "--scope", "--quiet", "--collect", "--slice=" + SLICE,
            "--unit=" + unit, "--property=Delegate=yes",
            "--description=appliance-api " + scope, "--"] + list(argv)


def _join_scope(pid, unit, *joining):
    """Move joining (the daemon's tee) into pid's scope once systemd-run has
    made it: a tee left behind would be the left-over process systemd
    complains of. Best effort: a tee outside the scope still logs."""
    import time

    deadline, made = time.monotonic() + 2, False
    while not made and time.monotonic() < deadline:
        try:
            with open("/proc/%d/cgroup" % pid) as cgroup:
                made = any(line.rstrip("\n").rpartition("/")[2] == unit for line in cgroup)
        except OSError:
            return  # gone already: start() says why
        if not made:
            time.sleep(0.005)
    if not made:
        return
    subprocess.run([BUSCTL, "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                    "org.freedesktop.systemd1.Manager", "AttachProcessesToUnit", "ssau",
                    unit, "", str(len(joining))] + [str(p) for p in joining],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5,
                   env=CLEAN_ENVIRONMENT)


# argv: the inherited descriptors, "--", the daemon's argv. Run by run(sockets=...).
HAND_OVER = """
import fcntl, os, sys
split = sys.argv.index("--")
fds, argv = [int(fd) for fd in sys.argv[1:split]], sys.argv[split + 1:]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 256) for fd in fds]
for fd in fds:
    os.close(fd)
for number, fd in enumerate(high, 3):
    os.dup2(fd, number)
    os.close(fd)
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(argv[0], argv)
"""
