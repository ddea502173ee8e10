"""system/commands.py: programs run from argument lists, in a clean
environment; daemons started in a systemd scope where systemd is PID 1."""
import pytest

from appliance_api.system import MachineError, commands


def test_output_and_status_are_collected_and_the_environment_is_clean(monkeypatch):
    monkeypatch.setenv("SSL_CLIENT_S_DN_CN", "controller")  # a CGI variable
    result = commands.run(["/usr/bin/env"])
    assert result.ok and "SSL_CLIENT_S_DN_CN" not in result.output
    assert sorted(line.split("=")[0] for line in result.output.split()) == ["LC_ALL", "PATH"]
    assert commands.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]).returncode == 3


def test_a_missing_program_is_the_appliances_problem_naming_it():
    with pytest.raises(MachineError) as raised:
        commands.run(["/nonexistent/haproxy", "-v"])
    assert "Program not found: /nonexistent/haproxy" in str(raised.value)


def test_a_program_that_hangs_is_cut_at_its_timeout():
    with pytest.raises(MachineError) as raised:
        commands.run(["/bin/sleep", "5"], timeout=0.2)
    assert "timed out" in str(raised.value)


def test_sockets_are_handed_over_as_systemd_does(tmp_path):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        result = commands.run(["/bin/sh", "-c", "echo $LISTEN_FDS; test -e /proc/self/fd/3"],
                              sockets=[listener])
    assert result.ok and result.output.split() == ["1"]


def test_without_systemd_a_daemon_starts_as_it_is(monkeypatch):
    monkeypatch.setattr(commands, "systemd_is_init", lambda: False)
    argv = ["/usr/sbin/haproxy", "-f", "x.cfg"]
    assert commands.in_scope(argv, "appliance-haproxy-x") is argv


def test_under_systemd_a_daemon_starts_in_a_scope_of_its_own(monkeypatch):
    monkeypatch.setattr(commands, "systemd_is_init", lambda: True)
    argv = commands.in_scope(["/usr/sbin/haproxy", "-f", "x.cfg"], "appliance-haproxy-x")
    assert argv[:3] == [commands.SYSTEMD_RUN, "--scope", "--quiet"]
    assert "--slice=appliance-tenants.slice" in argv
    unit = next(word for word in argv if word.startswith("--unit="))[len("--unit="):]
    assert unit.startswith("appliance-haproxy-x-") and unit.endswith(".scope")
    assert argv[argv.index("--") + 1:] == ["/usr/sbin/haproxy", "-f", "x.cfg"]
    assert commands.in_scope(["true"], None) == ["true"]  # no scope asked: none


def test_handed_over_sockets_sit_on_3_and_up_with_the_daemons_own_pid(tmp_path):
    import socket

    listeners = [socket.socket(), socket.socket()]
    try:
        for listener in listeners:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
        script = ('echo "$LISTEN_FDS $LISTEN_PID $$"; '
                  'for fd in 3 4; do readlink /proc/$$/fd/$fd; done')
        result = commands.run(["/bin/sh", "-c", script], sockets=listeners)
    finally:
        for listener in listeners:
            listener.close()
    count, listen_pid, own_pid, first, second = result.output.split()
    assert count == "2" and listen_pid == own_pid
    assert first.startswith("socket:") and second.startswith("socket:") and first != second
    with pytest.raises(MachineError):
        commands.run(["/nonexistent/stunnel4"], sockets=[socket.socket()])
