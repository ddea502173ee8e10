"""The Makefile's Debian package list is complete: every lighttpd module the
config loads and every program the API, the Makefile and the tests run comes
from a package that `make deps` installs (or that one of them depends on).

A package installed by hand once hid `lighttpd-mod-openssl` from CI: lighttpd
only recommends it and the Makefile installs with --no-install-recommends.
This test finds the owner of each file with `dpkg -S` on this machine, so it
fails on any machine where the list is short, not only on a fresh one.
"""
import ast
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

LIGHTTPD_MODULES_DIR = "/usr/lib/lighttpd"
LIGHTTPD_BINARY = "/usr/sbin/lighttpd"
# lighttpd 1.4.69 loads these without being asked (server.compat-module-load),
# and mod_openssl whenever ssl.engine is on.
IMPLICIT_LIGHTTPD_MODULES = ("mod_indexfile", "mod_dirlisting", "mod_staticfile")
# Calls whose first argument is a command line.
RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "start_lighttpd"}
# Words that start a Makefile command line but are not programs of their own.
SHELL_WORDS = {"exec", "then", "else", "fi", "do", "done", "if", "for", "in", "cd", "echo",
               "test", "true", "false", "export", "set", "missing"}

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian system")


def makefile_packages():
    output = subprocess.run(["make", "-s", "-C", ROOT, "print-debian-packages"],
                            stdout=subprocess.PIPE, check=True, text=True).stdout
    return output.split()


def lighttpd_modules():
    """Modules conf/lighttpd.conf loads, explicitly and implicitly."""
    with open(os.path.join(ROOT, "conf", "lighttpd.conf")) as file:
        text = re.sub(r"#[^\n]*", "", file.read())
    match = re.search(r"server\.modules\s*\+?=\s*\(([^)]*)\)", text)
    assert match, "no server.modules in conf/lighttpd.conf"
    modules = set(re.findall(r'"(mod_[a-z0-9_]+)"', match.group(1)))
    if 'server.compat-module-load = "disable"' not in text:
        modules.update(IMPLICIT_LIGHTTPD_MODULES)
    if re.search(r'ssl\.engine\s*=\s*"enable"', text):
        modules.add("mod_openssl")
    return sorted(modules)


def programs_in_python(path):
    """Programs named first in a command line literal of a subprocess call
    (or an `argv = [...]` assignment) in one Python file."""
    with open(path) as file:
        tree = ast.parse(file.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in RUNNERS:
                found.update(_list_heads(node.args[0]))
        elif isinstance(node, ast.Assign) and any(
                getattr(target, "id", "") in ("argv", "command") for target in node.targets):
            found.update(_list_heads(node.value))
    return found


def _list_heads(node):
    for sub in ast.walk(node):
        if isinstance(sub, (ast.List, ast.Tuple)) and sub.elts and \
                isinstance(sub.elts[0], ast.Constant) and isinstance(sub.elts[0].value, str) \
                and not sub.elts[0].value.startswith("-"):  # options added to a command line
            yield sub.elts[0].value


def programs_in_makefile():
    """First words of the Makefile's command lines (split at ; && || |), with
    quoted text and make variables taken out first."""
    found = set()
    with open(os.path.join(ROOT, "Makefile")) as file:
        logical_lines = file.read().replace("\\\n", " ").splitlines()
    for line in (line for line in logical_lines if line.startswith("\t")):
        line = re.sub(r"'[^']*'|\"[^\"]*\"", "''", line)
        line = re.sub(r"\$\$?\([^)]*\)|\$\$?\{[^}]*\}|\$\$\w+", "VARIABLE", line)
        for command in re.split(r";|&&|\|\||\|", line):
            words = [w for w in command.strip().lstrip("@").split()
                     if "=" not in w and w not in ("VARIABLE", "exec", "do", "then", "else")]
            if words and re.fullmatch(r"[a-z0-9][a-z0-9._+-]*", words[0]):
                found.add(words[0])
    return found - SHELL_WORDS


def configured_programs():
    """The API's own programs: the defaults of the config's [programs] section."""
    import sys
    sys.path.insert(0, os.path.join(ROOT, "lib"))
    from appliance_api.config import DEFAULTS
    return set(DEFAULTS["programs"].values())


def programs_used():
    programs = configured_programs() | programs_in_makefile()
    for folder in ("lib", "tools", "tests", "bench", "cgi-bin"):
        for directory, _subdirs, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                if name.endswith(".py"):
                    programs |= programs_in_python(os.path.join(directory, name))
    return programs


def owner(path):
    """The Debian package that owns path, trying the /usr-merged spellings
    (/sbin/ip vs /usr/sbin/ip) and the file a symlink or alternative leads to."""
    candidates = [path, os.path.realpath(path)]
    for candidate in list(candidates):
        if candidate.startswith("/usr/"):
            candidates.append(candidate[len("/usr"):])
        else:
            candidates.append("/usr" + candidate)
    for candidate in candidates:
        result = subprocess.run(["dpkg-query", "-S", candidate], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        for line in result.stdout.splitlines():
            # "pkg1, pkg2: /path"; the first is the owner. "diversion by ..." lines are not.
            if not line.startswith("diversion by "):
                return line.split(":", 1)[0].split(",")[0].strip()
    return None


_database = None


def installed_packages():
    """{package: (depends, essential, priority)} of every package installed here."""
    global _database
    if _database is None:
        output = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package}\t${db:Status-Abbrev}\t${Depends}, "
             "${Pre-Depends}\t${Essential}\t${Priority}\n"],
            stdout=subprocess.PIPE, check=True, text=True).stdout
        _database = {}
        for line in output.splitlines():
            package, status, depends, essential, priority = line.split("\t")
            if status.startswith("ii"):
                _database[package] = (depends, essential, priority)
    return _database


def installed_with(packages):
    """packages and everything they depend on (Depends, Pre-Depends), recursively."""
    database = installed_packages()
    closure, todo = set(), list(packages)
    while todo:
        package = todo.pop()
        if package in closure:
            continue
        closure.add(package)
        depends = database.get(package, ("",))[0]
        for alternative_group in depends.split(","):
            # "a | b (>= 1)": either will do; follow the ones installed here.
            for choice in alternative_group.split("|"):
                name = choice.strip().split(" ")[0].split(":")[0]
                if name in database:
                    todo.append(name)
    return closure


def always_there(package):
    """Essential and required packages are on every Debian system."""
    _depends, essential, priority = installed_packages().get(package, ("", "", ""))
    return essential == "yes" or priority == "required"


def missing_packages(packages, modules, programs):
    """(what, package) for every module and program whose package the list lacks,
    or (what, None) for one this machine does not have at all."""
    covered = installed_with(packages)
    missing = []
    for module in modules:
        path = os.path.join(LIGHTTPD_MODULES_DIR, module + ".so")
        if not os.path.exists(path):
            with open(LIGHTTPD_BINARY, "rb") as file:
                if (module + "_plugin_init").encode() in file.read():
                    continue  # built into the lighttpd binary
            missing.append(("lighttpd module " + module, None))
            continue
        package = owner(path)
        if package not in covered:
            missing.append(("lighttpd module " + module, package))
    for program in sorted(programs):
        path = program if os.path.isabs(program) else shutil.which(program)
        if path is None:
            if shutil.which(os.path.basename(program)) is None:
                missing.append(("program " + program, None))
            continue
        if path.startswith(ROOT + os.sep):
            continue  # the project's own scripts and its venv
        package = owner(path)
        if package is None:
            continue  # not from a Debian package (the venv, pyenv): not apt's business
        if package not in covered and not always_there(package):
            missing.append(("program " + program, package))
    return missing


def describe(missing):
    return "\n".join("%s needs the Debian package %s: add it to DEBIAN_PACKAGES in the Makefile"
                     % (what, package) if package else "%s is not on this machine" % what
                     for what, package in missing)


def test_every_module_and_program_comes_from_a_listed_package():
    missing = missing_packages(makefile_packages(), lighttpd_modules(), programs_used())
    assert not missing, describe(missing)


def test_the_check_names_lighttpd_mod_openssl_when_it_is_left_out():
    packages = [p for p in makefile_packages() if p != "lighttpd-mod-openssl"]
    missing = missing_packages(packages, lighttpd_modules(), programs_used())
    assert ("lighttpd module mod_openssl", "lighttpd-mod-openssl") in missing
    assert "lighttpd module mod_openssl needs the Debian package lighttpd-mod-openssl" \
        in describe(missing)


def test_the_check_names_the_package_of_a_program_when_it_is_left_out():
    packages = [p for p in makefile_packages() if p != "stunnel4"]
    missing = missing_packages(packages, [], programs_used())
    assert ("program /usr/bin/stunnel4", "stunnel4") in missing


def test_the_scan_finds_the_programs_the_project_runs():
    """The scan is what makes the check worth anything: it must see these."""
    programs = programs_used()
    for expected in ("curl", "lighttpd", "/usr/sbin/haproxy", "/usr/bin/stunnel4",
                     "/usr/sbin/ip", "/usr/sbin/iptables", "/usr/sbin/ip6tables"):
        assert expected in programs, sorted(programs)
    assert {"mod_openssl", "mod_cgi", "mod_accesslog"} <= set(lighttpd_modules())
