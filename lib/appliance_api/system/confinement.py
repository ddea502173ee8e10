"""Run a check of tenant input where it cannot hurt the appliance: as the
unprivileged user nobody, with no network (fresh network, IPC and UTS
namespaces), chrooted into a tree that holds only a copy of the instance's
own files and the read-only system files a daemon needs to start.

`haproxy -c` does far more than read text: it runs Lua while it parses,
opens every file the config names, and resolves host names. The scan
(configscan) refuses all of that before the check runs; this is the wall
behind it, should a rule ever be missed: code that runs here can read no
other tenant's keys, none of the API's, and reach nothing on the network.

Linux only, and the caller must be root (it always is on an appliance: the
API starts daemons). Python 3.11 has no os.unshare, hence ctypes; the
namespaces are made in the child between fork and exec (preexec_fn), so
the caller's own process never changes.
"""
import ctypes
import os
import pwd
import shutil
import tempfile

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET = 0x20000, 0x4000000, 0x8000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 32, 4096, 16384, 1 << 18)
PR_SET_NO_NEW_PRIVS = 38
USER = "nobody"

# What a daemon's check needs of the system, read-only. Folders and files
# that do not exist on this machine are left out.
SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
                  "/etc/ssl/certs", "/etc/haproxy/errors")
SYSTEM_FILES = ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ld.so.cache",
                "/etc/localtime", "/etc/services", "/etc/protocols", "/etc/ssl/openssl.cnf",
                "/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")


class ConfinementFailed(Exception):
    """The confined tree or its namespaces could not be made."""


class Confinement:
    """A confined tree for one check of one instance: a copy of the
    instance's own files (those named, as the caller chooses) under a root
    folder made inside the instance folder, removed by close(). Use
    preexec() as subprocess's preexec_fn, with cwd left unset."""

    def __init__(self, instance_dir, names):
        self.instance_dir = os.path.abspath(instance_dir)
        try:
            user = pwd.getpwnam(USER)
        except KeyError:
            raise ConfinementFailed("no user %r to run checks as" % USER)
        self.uid, self.gid = user.pw_uid, user.pw_gid
        self._libc = ctypes.CDLL(None, use_errno=True)
        # A dot-name ending .tmp: swept up like any temporary if this request dies.
        self.root = tempfile.mkdtemp(prefix=".confined-", suffix=".tmp", dir=self.instance_dir)
        try:
            os.chmod(self.root, 0o755)  # the user's / once chrooted
            self._copy(names)
        except OSError as error:
            self.close()
            raise ConfinementFailed("could not copy the instance's files: %s" % error)

    def _copy(self, names):
        """Copy each named file, or folder of files, of the instance, owned by the user."""
        inside = self.root
        for part in self.instance_dir.strip("/").split("/"):
            inside += "/" + part
            os.mkdir(inside)
            os.chmod(inside, 0o755)  # whatever the umask: the user walks through
        os.chown(inside, self.uid, self.gid)
        os.chmod(inside, 0o700)
        for name in names:
            source = os.path.join(self.instance_dir, name)
            target = os.path.join(inside, name)
            if os.path.isdir(source) and not os.path.islink(source):
                os.mkdir(target, 0o700)
                os.chown(target, self.uid, self.gid)
                for entry in os.listdir(source):
                    self._copy_file(os.path.join(source, entry), os.path.join(target, entry))
            else:
                self._copy_file(source, target)

    def _copy_file(self, source, target):
        if os.path.islink(source) or not os.path.isfile(source):
            return  # the API stores regular files only: anything else is not the tenant's
        shutil.copyfile(source, target)
        os.chown(target, self.uid, self.gid)
        os.chmod(target, 0o600)

    def path(self, name):
        """Where the copy of the instance's file name is, seen from outside."""
        return self.root + os.path.join(self.instance_dir, name)

    def preexec(self):
        """In the child, before exec: new namespaces, the tree as root, the
        system files bound read-only into it, then nobody, for good."""
        libc = self._libc
        if libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        self._mount(None, "/", MS_REC | MS_PRIVATE)
        self._mount(self.root, self.root, MS_BIND)
        for source in SYSTEM_FOLDERS + SYSTEM_FILES:
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
        os.setgroups([])
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, self.uid)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")

    def _mount(self, source, target, flags):
        encode = (lambda text: None if text is None else os.fsencode(text))
        if self._libc.mount(encode(source), encode(target), None, flags, None) != 0:
            raise OSError(ctypes.get_errno(), "mount %s" % target)

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
