"""This node's place in its cluster: active or standby, and its fencing daemon."""
import shlex

ACTIVE_WORDS = {"active", "master", "primary", "1"}
STANDBY_WORDS = {"standby", "backup", "secondary", "0"}


def active_node(config):
    """1 on the active (or only) node, 0 on a standby; from the role file if there is one."""
    path = config.get("status", "role_file")
    if not path:
        return 1
    try:
        with open(path) as file:
            role = file.read().strip().lower()
    except OSError:
        return 1
    return 0 if role in STANDBY_WORDS else 1


def fencing_daemon_status(config):
    """"OK" when no fencing daemon is configured or it is healthy, else what is wrong."""
    pid_file = config.get("status", "fencing_pid_file")
    command = config.get("status", "fencing_command")
    if pid_file:
        from .system import processes

        pid = processes.read_pid(pid_file)
        return "OK" if pid and processes.pid_alive(pid) else "DOWN"
    if command:
        from .system import commands

        try:
            result = commands.run(shlex.split(command), timeout=5)
        except Exception as error:  # a broken probe is a status, not a failed request
            return "FAILED: %s" % error
        return "OK" if result.ok else "FAILED (exit %d)" % result.returncode
    return "OK"
