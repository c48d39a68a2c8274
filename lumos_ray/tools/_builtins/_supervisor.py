"""The source of the tiny supervisor process that runs one sandboxed command.

It is run as ``python -I -S -c SOURCE SPEC_JSON`` (a string, not an import, so it
starts in ~20 ms and needs nothing from lumos_ray). Why a supervisor: a command can
start children in their own session (``setsid``), out of reach of a process-group
kill, and those children hold the output pipes open, so the caller would wait for
however long they run. The supervisor makes itself a *child subreaper*
(``PR_SET_CHILD_SUBREAPER``): every descendant, setsid or not, that loses its
parent is re-parented to it, so when the command ends or its time is up it finds
all of them under ``/proc`` and kills them, over and over until none is left (a
process forking while it is being killed is caught on the next pass). With
``PR_SET_PDEATHSIG`` it dies with the tool process that started it.
"""

from __future__ import annotations

__all__ = ["SUPERVISOR_SOURCE"]

SUPERVISOR_SOURCE = r"""
import ctypes, json, os, resource, signal, sys, time

spec = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != spec["parent"]:
    sys.exit(125)  # the tool process died before we could follow it
status_fd = spec["status_fd"]
os.set_inheritable(status_fd, False)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
pid = os.fork()
if pid == 0:
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
        for name, value in spec["rlimits"]:
            resource.setrlimit(getattr(resource, name), (value, value))
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except BaseException as exc:
        os.write(2, ("sandbox: cannot start %r: %s\n" % (spec["argv"][0], exc)).encode())
    os._exit(127)

deadline = time.monotonic() + spec["timeout"]
code = None
timed_out = False


def reap():
    global code
    while True:
        try:
            r, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if r == 0:
            return
        if r == pid:
            code = os.waitstatus_to_exitcode(st)


while code is None:
    left = deadline - time.monotonic()
    if left <= 0:
        timed_out = True
        break
    signal.sigtimedwait([signal.SIGCHLD], min(left, 1.0))
    reap()


def descendants():
    parent_of = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d, "rb") as fh:
                data = fh.read()
            parent_of[int(d)] = int(data[data.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {p for p, pp in parent_of.items() if pp in frontier and p not in found}
        found |= frontier
    return found


left_alive = 0
for _ in range(500):
    kids = descendants()
    left_alive = len(kids)
    if not kids:
        break
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.002)
    reap()
reap()
os.write(status_fd, json.dumps(
    {"exit_code": code, "timed_out": timed_out, "left_alive": left_alive}).encode())
"""
