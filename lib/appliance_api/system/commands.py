"""Run a program with an argument list (never a shell) and collect what it said."""
import subprocess

from ..errors import ServerError


class Result:
    def __init__(self, returncode, output):
        self.returncode = returncode
        self.output = output

    @property
    def ok(self):
        return self.returncode == 0


def run(argv, timeout=30):
    """Run argv to completion; stdout and stderr together, as text.

    A program that is missing or cannot be executed is the appliance's
    problem, not the client's: ServerError (500) naming the program.
    """
    try:
        completed = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=timeout, close_fds=True)
    except FileNotFoundError:
        raise ServerError("Program not found: %s" % argv[0])
    except PermissionError:
        raise ServerError("Program not executable: %s" % argv[0])
    except subprocess.TimeoutExpired:
        raise ServerError("Program timed out after %ds: %s" % (timeout, " ".join(argv)))
    return Result(completed.returncode, completed.stdout.decode("utf-8", "replace"))


def spawn(argv, log_path):
    """Start a long-running daemon detached from this request: its own session,
    no inherited descriptors, output appended to log_path. Returns the Popen."""
    with open(log_path, "ab") as log:
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    close_fds=True, start_new_session=True)
        except FileNotFoundError:
            raise ServerError("Program not found: %s" % argv[0])
        except PermissionError:
            raise ServerError("Program not executable: %s" % argv[0])
