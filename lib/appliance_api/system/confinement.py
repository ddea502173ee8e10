"""Run a check of tenant input where it cannot hurt the appliance: as a user
of its own (a uid no other process has, fresh for each check), with no
network (fresh network, IPC and UTS namespaces), chrooted into a tree that
holds only a read-only copy of the instance's own files and the read-only
system files a daemon needs, unable to fork or to write a byte.

`haproxy -c` does far more than read text: it runs Lua while it parses,
opens every file the config names, and resolves host names. The scan
(configscan) refuses all of that before the check runs; this is the wall
behind it, should a rule ever be missed: code that runs here can read no
other tenant's keys, none of the API's, reach nothing on the network, and
outlives the check by nothing: whatever runs as its uid is killed after.

Why a uid of its own, not nobody: two tenants' checks as one user could
ptrace and signal each other (a review read another tenant's key out of a
concurrent check with strace that way), and nothing would tell a check's
leftover processes from another's.

Linux only, and the caller must be root (it always is on an appliance: the
API starts daemons). Python 3.11 has no os.unshare, hence ctypes; the
namespaces are made in the child between fork and exec (preexec_fn), so
the caller's own process never changes.
"""
import ctypes
import os
import resource
import secrets
import shutil
import signal
import tempfile

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET = 0x20000, 0x4000000, 0x8000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 32, 4096, 16384, 1 << 18)
PR_SET_NO_NEW_PRIVS = 38
# Each check's uid and gid: one number drawn from this range, far above any
# account an appliance has (and below 2^32 - 1, which means "no id").
FIRST_ID, IDS = 3_000_000_000, 1_000_000_000

# What a daemon's check needs of the system, read-only. Folders and files
# that do not exist on this machine are left out.
SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
                  "/etc/ssl/certs", "/etc/haproxy/errors")
SYSTEM_FILES = ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ld.so.cache",
                "/etc/localtime", "/etc/services", "/etc/protocols", "/etc/ssl/openssl.cnf",
                "/etc/resolv.conf", "/etc/hosts", "/etc/host.conf",
                "/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")


class ConfinementFailed(Exception):
    """The confined tree or its namespaces could not be made."""


class Confinement:
    """A confined tree for one check of one instance: a copy of the
    instance's own files (those named, as the caller chooses) and the
    programs it will run, read-only, under a root
    folder made inside the instance folder; close() kills whatever still
    runs as the check's uid and removes the tree. Use preexec() as
    subprocess's preexec_fn, with cwd left unset."""

    def __init__(self, instance_dir, names, programs=()):
        self.instance_dir = os.path.abspath(instance_dir)
        # The program the check runs, bound in where it lives (a configured
        # binary need not be under /usr).
        self.programs = tuple(path for path in map(os.path.realpath, programs) if not any(
            path.startswith(folder + "/") for folder in SYSTEM_FOLDERS))
        self.uid = self.gid = FIRST_ID + secrets.randbelow(IDS)
        self._libc = ctypes.CDLL(None, use_errno=True)
        # A dot-name ending .tmp: swept up like any temporary if this request dies.
        self.root = tempfile.mkdtemp(prefix=".confined-", suffix=".tmp", dir=self.instance_dir)
        try:
            self._readable_folder(self.root)  # the check's / once chrooted
            self._copy(names)
        except OSError as error:
            self.close()
            raise ConfinementFailed("could not copy the instance's files: %s" % error)

    def _readable_folder(self, path):
        """root-owned, the check's group may read and enter, nobody else: the
        copy is of keys, and it sits in the real instance folder meanwhile."""
        os.chown(path, 0, self.gid)
        os.chmod(path, 0o750)

    def _copy(self, names):
        """Copy each named file, or folder of files, of the instance: owned by
        root, readable by the check's group only, so the check can write nothing."""
        inside = self.root
        for part in self.instance_dir.strip("/").split("/"):
            inside += "/" + part
            os.mkdir(inside)
            self._readable_folder(inside)
        for name in names:
            source = os.path.join(self.instance_dir, name)
            target = os.path.join(inside, name)
            if os.path.isdir(source) and not os.path.islink(source):
                os.mkdir(target)
                self._readable_folder(target)
                for entry in os.listdir(source):
                    self._copy_file(os.path.join(source, entry), os.path.join(target, entry))
            else:
                self._copy_file(source, target)

    def _copy_file(self, source, target):
        if os.path.islink(source) or not os.path.isfile(source):
            return  # the API stores regular files only: anything else is not the tenant's
        shutil.copyfile(source, target)
        os.chown(target, 0, self.gid)
        os.chmod(target, 0o640)

    def path(self, name):
        """Where the copy of the instance's file name is, seen from outside."""
        return self.root + os.path.join(self.instance_dir, name)

    def preexec(self):
        """In the child, before exec: new namespaces, the tree as root, the
        system files bound read-only into it, no forking and no writing,
        then the check's own uid, for good."""
        libc = self._libc
        if libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        self._mount(None, "/", MS_REC | MS_PRIVATE)
        self._mount(self.root, self.root, MS_BIND)
        for source in SYSTEM_FOLDERS + SYSTEM_FILES + self.programs:
            if not os.path.lexists(source):
                continue
            target = self.root + source
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            if os.path.islink(source) and source in SYSTEM_FOLDERS:
                if not os.path.lexists(target):  # made by an earlier run of the same tree
                    os.symlink(os.readlink(source), target)  # /lib -> usr/lib on Debian 12
                continue
            if os.path.isdir(source):
                os.makedirs(target, mode=0o755, exist_ok=True)
            else:
                open(target, "ab").close()
            self._mount(source, target, MS_BIND | MS_REC)
            self._mount(None, target, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
                        | (0 if source.startswith("/dev/") else MS_NODEV))
        os.chroot(self.root)
        os.chdir(self.instance_dir)
        # The uid is new, so one process is all it has: no fork, no thread.
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setgroups([])
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, self.uid)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")

    def _mount(self, source, target, flags):
        encode = (lambda text: None if text is None else os.fsencode(text))
        if self._libc.mount(encode(source), encode(target), None, flags, None) != 0:
            raise OSError(ctypes.get_errno(), "mount %s" % target)

    def kill_leftovers(self):
        """SIGKILL whatever still runs as the check's uid (nothing should: it
        cannot fork); the pids that were killed."""
        killed = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/status" % name, "rb") as status:
                    for line in status:
                        if line.startswith(b"Uid:"):
                            if int(line.split()[1]) == self.uid:
                                os.kill(int(name), signal.SIGKILL)
                                killed.append(int(name))
                            break
            except (OSError, ValueError):
                continue  # gone meanwhile
        return killed

    def close(self):
        self.kill_leftovers()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
