"""`make install` gives an appliance image a working API: the installed CGI
answers under this interpreter (Debian's python3 too, in `make test`), and
the installed lighttpd configuration passes lighttpd's own check."""
import os
import subprocess
import sys

from conftest import ROOT


def test_installed_tree_serves_and_lighttpd_accepts_its_config(tmp_path):
    dest = tmp_path / "image"
    subprocess.run(["make", "-s", "-C", ROOT, "install", "DESTDIR=%s" % dest, "PREFIX=/usr"],
                   check=True)
    root = dest / "usr" / "lib" / "appliance-api"
    etc = dest / "etc" / "appliance-api"
    assert (root / "cgi-bin" / "appliance-api").stat().st_mode & 0o111
    drop_in = (dest / "lib/systemd/system/lighttpd.service.d/appliance-api.conf").read_text()
    assert "ExecStart=/usr/sbin/lighttpd -D -f /etc/appliance-api/lighttpd.conf" in drop_in
    assert "@" not in drop_in
    assert "ExecStartPre=-/usr/sbin/octctl --config /etc/appliance-api/appliance-api.ini " \
        "reconcile" in drop_in
    # The tenants' daemons live in scopes of their own, not in lighttpd's
    # group: nothing there to hide from systemd. SIGINT reaches lighttpd alone.
    assert "\nKillMode=mixed\n" in drop_in and "\nKillMode=process" not in drop_in
    assert "\nKillSignal=SIGINT\n" in drop_in  # lighttpd's graceful stop
    assert os.readlink(dest / "usr" / "sbin" / "octctl") == "../lib/appliance-api/bin/octctl"
    assert (root / "bin" / "octctl").stat().st_mode & 0o111
    timer = (dest / "lib/systemd/system/appliance-api-sync.timer").read_text()
    assert "OnUnitActiveSec=10s" in timer
    assert os.readlink(dest / "etc/systemd/system/timers.target.wants/appliance-api-sync.timer") \
        == "/lib/systemd/system/appliance-api-sync.timer"  # enabled: every node runs it
    sync_service = (dest / "lib/systemd/system/appliance-api-sync.service").read_text()
    assert "ExecStart=/usr/sbin/octctl --config /etc/appliance-api/appliance-api.ini sync" \
        in sync_service
    assert "\nKillMode=mixed\n" in sync_service and "\nKillMode=process" not in sync_service
    supervisor = (dest / "lib/systemd/system/appliance-api-supervisor.service").read_text()
    assert "ExecStart=/usr/sbin/octctl --config /etc/appliance-api/appliance-api.ini supervise" \
        in supervisor and "\nType=notify\n" in supervisor and "\nRestart=always\n" in supervisor
    assert "\nKillMode" not in supervisor  # its group holds the supervisor alone
    assert os.readlink(dest / "etc/systemd/system/multi-user.target.wants/"
                       "appliance-api-supervisor.service") \
        == "/lib/systemd/system/appliance-api-supervisor.service"  # enabled: runs from boot
    assert (dest / "lib/systemd/system/appliance-tenants.slice").exists()
    assert "net.ipv4.ip_nonlocal_bind = 1" in (
        dest / "etc" / "sysctl.d" / "60-appliance-api.conf").read_text()
    assert (dest / "etc" / "logrotate.d" / "appliance-api").read_text().count(
        "/var/lib/appliance-api/instances/*/") == 2

    state = tmp_path / "state"
    config = tmp_path / "api.ini"
    config.write_text("[paths]\nstate_dir = %s\n[network]\nmanage = no\n" % state)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/instances", "SERVER_NAME": "appliance",
               "SERVER_PORT": "443", "SERVER_PROTOCOL": "HTTP/1.1", "GATEWAY_INTERFACE": "CGI/1.1",
               "SSL_CLIENT_VERIFY": "SUCCESS", "APPLIANCE_API_CONFIG": str(config)}
    output = subprocess.run([sys.executable, str(root / "cgi-bin" / "appliance-api")],
                            env=environ, stdout=subprocess.PIPE, check=True, cwd="/").stdout
    assert output.startswith(b"Status: 200 OK\r\n")
    octctl = subprocess.run([sys.executable, str(dest / "usr" / "sbin" / "octctl"), "--config",
                             str(config), "reconcile"], stdout=subprocess.PIPE, text=True,
                            cwd="/")
    assert octctl.returncode == 0
    assert octctl.stdout.startswith("network management is off")
    del environ["SSL_CLIENT_VERIFY"]
    output = subprocess.run([sys.executable, str(root / "cgi-bin" / "appliance-api")],
                            env=environ, stdout=subprocess.PIPE, check=True, cwd="/").stdout
    assert output.startswith(b"Status: 403 Forbidden\r\n")
    assert output.endswith(b"\r\n\r\nClient certificate required\n")

    pki = tmp_path / "pki"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "pki.py"), "--out", str(pki)],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, str(root / "tools" / "lighttpd_local.py"),
                    "--out", str(etc / "appliance-api.local.conf"), "--address", "127.0.0.1",
                    "--address", "::1", "--root", str(root), "--python", sys.executable,
                    "--config", str(config), "--pki", str(pki), "--log-dir", str(tmp_path),
                    "--pid-file", str(tmp_path / "lighttpd.pid")], check=True)
    include = (etc / "appliance-api.local.conf").read_text()
    assert 'server.bind = "127.0.0.1"' in include
    assert '$SERVER["socket"] == "[::1]:443" { ssl.engine = "enable" }' in include
    check = subprocess.run(["lighttpd", "-tt", "-f", str(etc / "lighttpd.conf")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert check.returncode == 0, check.stdout
    assert "WARNING" not in check.stdout  # e.g. "unknown config-key ... (ignored)"


def test_installed_systemd_units_pass_systemd_analyze(tmp_path):
    """systemd reads every key of the installed units (a misspelt key is only
    a warning in the journal, and the setting silently missing); the
    programs they run are the ones the image installs."""
    import re
    import shutil

    dest = tmp_path / "image"
    subprocess.run(["make", "-s", "-C", ROOT, "install", "DESTDIR=%s" % dest, "PREFIX=/usr"],
                   check=True)
    units = tmp_path / "units"
    shutil.copytree(dest / "lib/systemd/system", units)
    shutil.copy("/lib/systemd/system/lighttpd.service", units)  # what the drop-in extends
    unit_paths = [str(units / name) for name in
                  ["lighttpd.service", "appliance-api-sync.service", "appliance-api-sync.timer",
                   "appliance-api-supervisor.service", "appliance-tenants.slice"]]
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no"] + unit_paths,
                            env=dict(os.environ, SYSTEMD_UNIT_PATH="%s:" % units),
                            cwd=str(units), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    problems = []
    for line in verify.stdout.splitlines():
        missing = re.search(r"Command (/\S+) is not executable: No such file", line)
        if missing and (dest / missing.group(1).lstrip("/")).exists():
            continue  # installed into the image, not onto this machine
        problems.append(line)
    assert problems == []


def test_make_run_names_the_package_of_a_missing_lighttpd_module(tmp_path):
    """`make run` checks the config with `lighttpd -tt` first and says in one
    line what to install, rather than lighttpd's dlopen error and Error 255."""
    import devsite  # tools/devsite.py

    lighttpd_conf = tmp_path / "lighttpd.conf"
    lighttpd_conf.write_text('server.modules = ("mod_alias", "mod_notthere_auth")\n'
                             'server.document-root = "%s"\nserver.port = 9\n' % tmp_path)
    problem = devsite.check_lighttpd_config(str(lighttpd_conf))
    assert problem == ("lighttpd cannot load mod_notthere_auth "
                       "(/usr/lib/lighttpd/mod_notthere_auth.so is missing): install the Debian "
                       "package lighttpd-mod-notthere-auth (make deps does)")
    lighttpd_conf.write_text('server.document-root = "%s"\nserver.port = 9\n' % tmp_path)
    assert devsite.check_lighttpd_config(str(lighttpd_conf)) is None
    lighttpd_conf.write_text('server.document-root = "%s"\nserver.port = 9\nserver.modules = (\n'
                             % tmp_path)
    problem = devsite.check_lighttpd_config(str(lighttpd_conf))
    assert problem.startswith("lighttpd refuses %s: " % lighttpd_conf) and "\n" not in problem
