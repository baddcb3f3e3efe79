"""Postfix's ``smtp-sink`` and ``smtp-source`` for benchmarks, without the Postfix daemon.

    sink_path, source_path, env = ensure_binaries()
    with SmtpSink(sink_path, env) as sink:
        ...  # send to 127.0.0.1:sink.port
    print(sink.messages)

:func:`ensure_binaries` finds the two programs in this order:

1. a cache (``$SENDER_BENCH_CACHE``, else ``~/.cache/sender-bench``) filled earlier;
2. ``/usr/sbin`` when the ``postfix`` package is installed;
3. ``apt-get download postfix`` into the cache and ``dpkg-deb -x``: nothing is
   installed and no daemon can start. The binaries carry ``RUNPATH /usr/lib/postfix``
   for ``libpostfix-*.so``; ``LD_LIBRARY_PATH`` (which wins over ``RUNPATH``) points
   at the extracted copy instead. If ``ldd`` still reports a missing system library,
   the ``lib*`` packages that ``postfix`` depends on are downloaded and extracted too;
4. as a last resort, ``apt-get install --no-install-recommends postfix`` with a
   ``/usr/sbin/policy-rc.d`` that exits 101, so that no daemon is started.

``smtp-sink`` advertises PIPELINING, 8BITMIME, DSN and ENHANCEDSTATUSCODES by default
(``-8``, ``-p``, ``-e`` would turn them off), but it has no SMTPUTF8 at all: messages
sent to it must have ASCII addresses (RFC 2047 headers are fine). Running as root,
it refuses to start without ``-u USER``; we pass ``-u nobody``.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["SmtpSink", "ensure_binaries", "print_notes"]

APT_TIMEOUT = 300  # seconds for any one apt-get / dpkg-deb call
SYSTEM_SBIN = Path("/usr/sbin")
NAMES = ("smtp-sink", "smtp-source")


def cache_dir() -> Path:
    base = os.environ.get("SENDER_BENCH_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sender-bench"


def _run(args: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False
    )


def _lib_dirs(root: Path) -> list[Path]:
    """Library directories inside an extracted tree, libpostfix first."""
    dirs = [root / "usr/lib/postfix"]
    for pattern in ("usr/lib/*-linux-gnu", "lib/*-linux-gnu", "usr/lib", "lib"):
        dirs.extend(p for p in sorted(root.glob(pattern)) if p.is_dir() and p not in dirs)
    return [d for d in dirs if d.is_dir()]


def _env_for(lib_dirs: list[Path]) -> dict[str, str]:
    env = dict(os.environ)
    if lib_dirs:
        parts = [str(d) for d in lib_dirs]
        if env.get("LD_LIBRARY_PATH"):
            parts.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(parts)
    return env


def _missing_libs(binary: Path, env: dict[str, str]) -> list[str] | None:
    """Libraries ``ldd`` cannot resolve; ``None`` if the binary is absent or not loadable."""
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return None
    result = subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    if result.returncode != 0:
        return None
    return re.findall(r"^\s*(\S+) => not found", result.stdout, flags=re.MULTILINE)


def _usable(sbin: Path, env: dict[str, str]) -> bool:
    return all(_missing_libs(sbin / name, env) == [] for name in NAMES)


def _apt_download(packages: list[str], dest: Path) -> list[Path]:
    """``apt-get download`` into ``dest`` (an ``apt-get update`` first if lists are stale)."""
    result = _run(["apt-get", "download", *packages], cwd=dest)
    if result.returncode != 0:
        _run(["apt-get", "update"])
        result = _run(["apt-get", "download", *packages], cwd=dest)
    if result.returncode != 0:
        raise RuntimeError(f"apt-get download {' '.join(packages)}: {result.stderr.strip()}")
    return sorted(dest.glob("*.deb"))


def _extract(debs: list[Path], root: Path) -> None:
    for deb in debs:
        result = _run(["dpkg-deb", "-x", str(deb), str(root)])
        if result.returncode != 0:
            raise RuntimeError(f"dpkg-deb -x {deb.name}: {result.stderr.strip()}")


def _library_depends(deb: Path) -> list[str]:
    """The ``lib*`` package names in a .deb's Depends (first alternative, no versions)."""
    depends = _run(["dpkg-deb", "-f", str(deb), "Depends"]).stdout
    names = [part.split("|")[0].split("(")[0].strip() for part in depends.split(",")]
    return [name for name in names if name.startswith("lib") and name != "libc6"]


def _from_download(root: Path) -> tuple[Path, dict[str, str]]:
    """Download and extract ``postfix`` (and, if needed, its libraries) into ``root``."""
    if root.exists():
        shutil.rmtree(root)
    debs = root / "debs"
    debs.mkdir(parents=True)
    (root / ".gitignore").write_text("*\n")
    # _apt cannot write into a root-only directory; apt then downloads unsandboxed and warns.
    postfix_debs = _apt_download(["postfix"], debs)
    _extract(postfix_debs, root)
    sbin = root / "usr/sbin"
    env = _env_for(_lib_dirs(root))
    if not _usable(sbin, env):
        libs = _library_depends(postfix_debs[0])
        libdebs = debs / "libs"
        libdebs.mkdir()
        _extract(_apt_download(libs, libdebs), root)
        env = _env_for(_lib_dirs(root))
    if not _usable(sbin, env):
        missing = {lib for name in NAMES for lib in _missing_libs(sbin / name, env) or ["?"]}
        raise RuntimeError(f"extracted smtp-sink cannot load: {', '.join(sorted(missing))}")
    (root / "ok").write_text("ok\n")
    return sbin, env


def _master_running() -> bool:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "master":
                return True
        except OSError:
            continue
    return False


def _from_install() -> tuple[Path, dict[str, str]]:
    """Install the package with service starts forbidden by ``policy-rc.d``."""
    policy = SYSTEM_SBIN / "policy-rc.d"
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(["apt-get", "update"])
        result = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "postfix"],
            capture_output=True,
            text=True,
            env=env,
            timeout=APT_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"apt-get install postfix: {result.stderr.strip()[-500:]}")
    finally:
        if created:
            policy.unlink()
    if _master_running():
        print("warning: a process named 'master' (the Postfix daemon?) is running")
    return SYSTEM_SBIN, dict(os.environ)


def ensure_binaries() -> tuple[Path, Path, dict[str, str]]:
    """Return ``(smtp_sink, smtp_source, env)``; ``env`` is for starting either program.

    Callers at once (pytest's workers) take turns under a lock on the cache: the first
    fetches, the others then find its copy, rather than wiping each other's extraction.
    """
    lock_path = cache_dir() / "postfix.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _find_or_fetch()


def _find_or_fetch() -> tuple[Path, Path, dict[str, str]]:
    root = cache_dir() / "postfix"
    candidates: list[tuple[Path, dict[str, str]]] = []
    if (root / "ok").is_file():
        candidates.append((root / "usr/sbin", _env_for(_lib_dirs(root))))
    candidates.append((SYSTEM_SBIN, dict(os.environ)))
    for sbin, env in candidates:
        if _usable(sbin, env):
            return sbin / NAMES[0], sbin / NAMES[1], env
    print(f"fetching Postfix's smtp-sink/smtp-source into {root} (apt-get download postfix)")
    try:
        sbin, env = _from_download(root)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"extraction failed ({exc}); installing the package without starting it")
        sbin, env = _from_install()
    return sbin / NAMES[0], sbin / NAMES[1], env


def print_notes(note: str, *, sunk: int | None, sent: int) -> None:
    """Print under a result row: its note, then a warning if the sink counted another number."""
    if note:
        print(f"    {note}")
    if sunk is not None and sunk != sent:
        print(f"    warning: the sink counted {sunk:,}, not {sent:,}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """``smtp-sink`` on ``host:<free port>`` for the ``with`` block; counts messages.

    ``-c`` makes smtp-sink write ``sess=N quit=N mesg=N`` to stdout, ``\\r``-separated,
    after every message and every QUIT; stdout goes to a file (a pipe nobody reads
    would fill and stall the sink), and :attr:`messages` reads the last counter.
    """

    def __init__(
        self,
        sink: Path,
        env: dict[str, str],
        *,
        host: str = "127.0.0.1",
        backlog: int = 1024,
        max_sessions: int = 1024,
        start_timeout: float = 5.0,
    ) -> None:
        self.sink = sink
        self.env = env
        self.host = host
        self.port = 0
        self.backlog = backlog
        self.max_sessions = max_sessions
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def args(self) -> list[str]:
        args = [str(self.sink), "-c", "-m", str(self.max_sessions)]
        if os.geteuid() == 0:
            args += ["-u", _unprivileged_user()]
        return [*args, f"{self.host}:{self.port}", str(self.backlog)]

    def __enter__(self) -> SmtpSink:
        self._dir = tempfile.TemporaryDirectory(prefix="smtp-sink-")
        out = Path(self._dir.name)
        self.port = free_port(self.host)
        with (out / "stdout").open("wb") as stdout, (out / "stderr").open("wb") as stderr:
            self._proc = subprocess.Popen(
                self.args(), stdout=stdout, stderr=stderr, env=self.env, cwd=out
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._stop()
                raise RuntimeError(f"smtp-sink exited at start: {self.stderr}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            return self
        self._stop()
        raise RuntimeError(f"smtp-sink did not listen within {self.start_timeout}s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _read(self, name: str) -> str:
        if self._dir is None:
            return ""
        path = Path(self._dir.name) / name
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def stderr(self) -> str:
        return self._read("stderr").strip()

    @property
    def messages(self) -> int:
        """Messages accepted so far (the last ``mesg=`` counter)."""
        counts = re.findall(r"mesg=(\d+)", self._read("stdout"))
        return int(counts[-1]) if counts else 0

    @property
    def cpu_seconds(self) -> float | None:
        """The sink's CPU time so far (user + system), from ``/proc``; None where there is
        none (not Linux) or once the sink has stopped."""
        if self._proc is None:
            return None
        try:
            fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        # After the command name: state is field 3, utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        # The directory lives as long as this object (TemporaryDirectory's finalizer
        # removes it), so messages and stderr stay readable after the block.


def _unprivileged_user() -> str:
    for name in ("nobody", "daemon"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("smtp-sink needs -u USER as root, and neither nobody nor daemon exists")
