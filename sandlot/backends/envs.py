"""The virtual environments sandboxes run in, built once per package set.

An environment lives in the cache under the hash of the interpreter and the
sorted requirements, so the second sandbox with the same packages starts as fast
as any other. Builds take a file lock, so concurrent starts build once.

A sandbox without ``python_packages`` runs in an empty environment too: it sees
the standard library and nothing the host happens to have installed, and its
interpreter skips the host's ``.pth`` start-up hooks.

No interpreter of a built environment runs on the host: what a package brings
(a ``.pth`` hook, ``sitecustomize``, a console script) runs only in a sandbox.
On the host, uv resolves and unpacks wheels, and the base interpreter compiles
the bytecode with ``-I -S`` (no ``site``, so nothing in the environment starts).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import logging
import marshal
import os
import py_compile
import re
import shutil
import stat
import struct
import subprocess
import sys
import tomllib
import types
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .kit.bootstrap import DRIVER_SRC

if TYPE_CHECKING:
    from ..config import SandboxConfig

log = logging.getLogger("sandlot")

READY = ".sandlot-ready"


def cache_dir() -> Path:
    """``$SANDLOT_CACHE``, else ``$XDG_CACHE_HOME/sandlot``, else ``~/.cache/sandlot``."""
    if env := os.environ.get("SANDLOT_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sandlot"


def find_uv() -> str:
    """The uv executable: on PATH, or the one the ``uv`` package ships."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ConfigError(
            "python_packages needs uv to build the sandbox's environment; "
            "install it with 'pip install uv'"
        ) from None
    return str(find_uv_bin())


@dataclass(frozen=True)
class EnvSpec:
    """What goes into a sandbox's environment, and the text its cache key is made of."""

    packages: tuple[str, ...] = ()  # requirement specifiers
    files: tuple[str, ...] = ()  # requirements files, installed with -r
    path_entries: tuple[str, ...] = ()  # paths inside the sandbox put on sys.path (a .pth)
    cwd: str | None = None  # where relative paths in the requirements resolve
    key_text: str = ""  # what the requirements files and the project said, for the key
    no_build: bool = False  # wheels only: nothing from a project or a file builds on the host
    index_url: str | None = None  # the user's index, given on the command line or in the config
    find_links: tuple[str, ...] = ()  # the user's wheel locations, likewise

    @property
    def empty(self) -> bool:
        """True when the environment holds nothing beyond the standard library."""
        return not (self.packages or self.files or self.path_entries)

    def describe(self) -> str:
        """A short account of what the environment holds, for a progress line."""
        parts = []
        if self.packages:
            shown = ", ".join(self.packages[:4]) + (", ..." if len(self.packages) > 4 else "")
            parts.append(f"{len(self.packages)} package(s): {shown}")
        parts += [f"-r {os.path.basename(f)}" for f in self.files]
        if self.path_entries:
            parts.append(f"the project importable from {', '.join(self.path_entries)}")
        return "; ".join(parts) or "the standard library only"


def spec_for(config: SandboxConfig, workdir: str) -> EnvSpec:
    """The environment ``config`` asks for; ``workdir`` is the workdir's path inside the sandbox.

    A ``project`` adds its dependencies the way ``uv sync`` would: from
    ``uv.lock`` when there is one (``uv export``, the default groups included),
    else from ``pyproject.toml`` (``[project].dependencies`` and the ``dev``
    group), else from its requirements files. Its own code is put on
    ``sys.path`` at the workdir (or the workdir's ``src`` for a src layout),
    where it is uploaded.

    What a project or a requirements file asks for is installed from wheels
    only (``--no-build``): building a source distribution, a path or a VCS
    requirement runs its build code on the host, and a repository under test is
    not trusted to run code there. Nor may it choose where packages come from:
    see :func:`check_requirement`.
    """
    packages = list(config.python_packages)
    files = list(config.requirements)
    seen: set[str] = set()
    here = Path.cwd()  # where uv resolves the relative paths of the files named here
    key = [_requirements_text(f, here, None, seen) for f in files]
    key += [_local_stamp(p) for p in packages]
    entries: list[str] = []
    cwd = None
    if config.project is not None:
        project = Path(config.project)
        if not project.is_dir():
            raise ConfigError(f"project {config.project!r} is not a directory")
        cwd = str(project)
        found, text = _project_requirements(project, _manifest_stamp(project))
        packages += found.packages
        files += found.files
        key += [text]
        src = project / "src"
        entries.append(f"{workdir}/src" if src.is_dir() else workdir)
    no_build = bool(files) or config.project is not None
    links = tuple(config.find_links)
    key += [f"--index-url {config.index_url}", *(f"--find-links {loc}" for loc in links)]
    return EnvSpec(
        tuple(packages),
        tuple(files),
        tuple(entries),
        cwd,
        "\n".join(key),
        no_build=no_build,
        index_url=config.index_url,
        find_links=links,
    )


def _local_stamp(requirement: str) -> str:
    """For a requirement that is a file on this host (a wheel), its size and mtime: the key
    changes when the file does."""
    try:
        st = os.stat(requirement)
    except (OSError, ValueError):
        return ""
    return f"{requirement} {st.st_size} {st.st_mtime_ns}"


_INCLUDES = ("-r", "--requirement", "-c", "--constraint")
# Options a requirements file may hold: none changes where packages come from or what runs.
_SAFE_OPTIONS = frozenset(
    (*_INCLUDES, "--no-index", "--only-binary", "--no-binary", "--prefer-binary", "--pre")
)
_SOURCE_OPTIONS = frozenset(
    ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--index", "--default-index")
)
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|(?:git|hg|svn|bzr)\+)")
_DIRECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\s*(?:\[[^\]]*\])?\s*@\s*(\S+)")
_ARCHIVES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")
MAX_REQUIREMENTS_FILE = 1 << 20  # bytes: a requirements file is text a person wrote


def check_requirement(where: str, line: str, root: Path) -> None:
    """Refuse a requirements line (or a project's dependency) that changes where packages
    come from or what gets built on this host.

    ``where`` names the file and line for the error; relative paths resolve
    against ``root`` and must stay inside it. Refused: options other than
    ``_SAFE_OPTIONS`` (an index, find-links, ``-e``), direct URLs and VCS
    requirements, paths outside ``root``, and ``${VAR}`` (uv would expand the
    host's environment variables into it). The user gives an index or wheel
    locations on the command line (``--index-url``, ``--find-links``) or a URL
    with ``--with``.
    """
    if "${" in line:
        raise ConfigError(
            f"{where}: '${{...}}' is not accepted: uv would fill in this host's "
            "environment variables there"
        )
    # A requirement, then options of its own (--hash); or an option line.
    head, *options = re.split(r"\s+(?=-)", line.strip())
    if head.startswith("-"):
        options, head = [head, *options], ""
    for option in options:
        name, _ = _option(option)
        if name in _SAFE_OPTIONS or (head and name == "--hash"):
            continue
        if name in _SOURCE_OPTIONS:
            why = (
                "it changes where packages come from; give an index or wheel locations "
                "on the command line instead (--index-url, --find-links)"
            )
        elif name in ("-e", "--editable"):
            why = "an editable install builds on this host; name a wheel instead"
        else:
            why = f"a requirements file here may hold only {', '.join(sorted(_SAFE_OPTIONS))}"
        raise ConfigError(f"{where}: option {name} is not accepted: {why}")
    if not head:
        return
    target = head.split(";", 1)[0].strip()
    if direct := _DIRECT.match(target):
        target = direct.group(1)
    elif not (
        _URL.match(target)
        or target.startswith((".", "/", "~"))
        or "/" in target
        or target.lower().endswith(_ARCHIVES)
    ):
        return  # a name, with versions and markers: from the index the user chose
    if target.startswith("file:"):
        target = urllib.parse.unquote(urllib.parse.urlparse(target).path)
    elif _URL.match(target):
        raise ConfigError(
            f"{where}: the direct URL {target!r} is not accepted: it changes where a package "
            "comes from; if you mean it, give it on the command line with --with"
        )
    real = os.path.realpath(root / os.path.expanduser(target))
    if not (real + "/").startswith(os.path.realpath(root) + "/"):
        raise ConfigError(
            f"{where}: the path {target!r} leads outside {root}; requirements may "
            "name files inside it only (give another with --with if you mean it)"
        )


def _option(text: str) -> tuple[str, str]:
    """An option and its value, however written: ``-r f``, ``-rf``, ``--requirement=f``."""
    first, *more = text.split(None, 1)
    rest = more[0] if more else ""
    if first.startswith("--"):
        name, equals, value = first.partition("=")
        return name, value if equals else rest.strip()
    return first[:2], first[2:] or rest.strip()


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """A requirements file's lines as pip reads them: continuations joined, comments gone;
    each with the number of the line it starts on."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        start, before = pending or (number, "")
        joined = before + raw
        if joined.endswith("\\"):
            pending = (start, joined[:-1])
            continue
        pending = None
        line = re.sub(r"(^|\s)#.*$", "", joined).strip()
        if line:
            lines.append((start, line))
    if pending and pending[1].strip():
        lines.append(pending)
    return lines


def _requirements_text(
    path: str, here: Path, root: Path | None, seen: set[str], depth: int = 0
) -> str:
    """A requirements file's text, and that of the files it includes, for the cache key.

    Each file is read once, only if it is a regular file of at most
    ``MAX_REQUIREMENTS_FILE`` bytes, and each line passes :func:`check_requirement`
    (relative paths resolve against ``here``); with ``root`` (a project's), an
    include that leads outside it is refused, since uv would read it too.
    """
    real = os.path.realpath(path)
    if real in seen:
        return ""
    seen.add(real)
    if root is not None and not (real + "/").startswith(os.path.realpath(root) + "/"):
        raise ConfigError(
            f"requirements file {path!r} includes a file outside the project; "
            "a project's requirements must stay inside it"
        )
    try:
        st = os.stat(real)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_REQUIREMENTS_FILE:
            raise ConfigError(
                f"requirements file {path!r} is not a regular file of at most "
                f"{MAX_REQUIREMENTS_FILE} bytes"
            )
        text = Path(real).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"requirements file {path!r} cannot be read: {exc}") from None
    parts = [f"# {path}", text]
    for number, line in _logical_lines(text):
        check_requirement(f"{path}, line {number}", line, here)
        name, value = _option(line) if line.startswith("-") else ("", "")
        if name in _INCLUDES and value:
            if depth >= 8:
                raise ConfigError(f"requirements file {path!r}: includes nest deeper than 8")
            included = os.path.join(os.path.dirname(path), value)
            parts.append(_requirements_text(included, here, root, seen, depth + 1))
    return "\n".join(parts)


_DEV_REQUIREMENTS = (
    "requirements.txt",
    "requirements-dev.txt",
    "dev-requirements.txt",
    "requirements-test.txt",
    "test-requirements.txt",
    "requirements/dev.txt",
    "requirements/test.txt",
)


def _manifest_stamp(project: Path) -> tuple[tuple[str, int, int], ...]:
    """What a project's dependencies are read from, as (name, size, mtime): a cache key."""
    stamp = []
    for name in ("uv.lock", "pyproject.toml", *_DEV_REQUIREMENTS):
        with contextlib.suppress(OSError):
            st = (project / name).stat()
            stamp.append((name, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


@functools.lru_cache(maxsize=32)
def _project_requirements(
    project: Path, stamp: tuple[tuple[str, int, int], ...]
) -> tuple[EnvSpec, str]:
    """The dependencies of ``project`` (what ``uv sync`` would install) and their key text.

    Read once per state of its manifests (``stamp``): every sandbox of a pool, and
    the CLI before its sandbox, would otherwise run ``uv export`` again.
    """
    if (project / "uv.lock").is_file() and (project / "pyproject.toml").is_file():
        done = subprocess.run(
            [
                find_uv(),
                "export",
                "--no-config",
                "--frozen",
                "--no-hashes",
                "--no-header",
                "--no-emit-project",
                "--format",
                "requirements.txt",
                "--project",
                str(project),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ConfigError(
                f"project {str(project)!r}: uv could not read its uv.lock "
                f"(uv export exited {done.returncode}):\n{done.stderr.strip()[-2000:]}"
            )
        # The host's path dependencies are copied in, not linked: the host path is not there.
        lines = [
            line.removeprefix("-e ").strip()
            for line in done.stdout.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        for line in lines:
            check_requirement(f"{project / 'uv.lock'}: {line!r}", line, project)
        return EnvSpec(packages=tuple(lines)), "uv.lock\n" + "\n".join(lines)
    if (project / "pyproject.toml").is_file():
        try:
            data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"project {str(project)!r}: pyproject.toml: {exc}") from None
        deps = [str(d) for d in data.get("project", {}).get("dependencies", [])]
        deps += _group(data.get("dependency-groups", {}), "dev", set())
        deps += [str(d) for d in data.get("tool", {}).get("uv", {}).get("dev-dependencies", [])]
        for dep in deps:
            check_requirement(f"{project / 'pyproject.toml'}: {dep!r}", dep, project)
        return EnvSpec(packages=tuple(deps)), "pyproject.toml\n" + "\n".join(deps)
    files = [str(project / name) for name in _DEV_REQUIREMENTS if (project / name).is_file()]
    if not files:
        raise ConfigError(
            f"project {str(project)!r} has no pyproject.toml, uv.lock or requirements.txt; "
            "name its requirements with --requirements FILE (or --with PKG) instead"
        )
    seen: set[str] = set()
    text = "\n".join(_requirements_text(f, project, project, seen) for f in files)
    return EnvSpec(files=tuple(files)), text


def _group(groups: dict[str, Any], name: str, seen: set[str]) -> list[str]:
    """The requirements of dependency group ``name``, ``include-group`` entries followed."""
    if name in seen:
        return []
    seen.add(name)
    found: list[str] = []
    for item in groups.get(name, []):
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict) and isinstance(item.get("include-group"), str):
            found += _group(groups, item["include-group"], seen)
    return found


def env_key(python: str, spec: EnvSpec) -> str:
    """The cache key of an environment: interpreter and requirements, order-free."""
    text = "\n".join(
        [real_interpreter(python), *sorted(spec.packages), spec.key_text, *spec.path_entries]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def ready_env(python: str, spec: EnvSpec) -> Path | None:
    """The environment for ``spec`` if it is already built (a stat, no thread needed)."""
    target = cache_dir() / "envs" / env_key(python, spec)
    return target if (target / READY).exists() else None


def ensure_env(python: str, spec: EnvSpec, announce: Callable[[str], None] | None = None) -> Path:
    """Return the directory of a ready environment for ``spec``, building it if needed.

    ``announce`` is called with a line saying what is being built before a build
    starts (by default the line goes to the ``sandlot`` logger at INFO).
    """
    root = cache_dir() / "envs"
    root.mkdir(parents=True, exist_ok=True)
    target = root / env_key(python, spec)
    if (target / READY).exists():
        return target
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / READY).exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        if not (spec.packages or spec.files):
            _build_empty(python, target)
        else:
            what = spec.describe()
            (announce or log.info)(
                f"building the sandbox's environment ({what}); once: later starts reuse it"
            )
            _build(python, spec, target)
        _add_path_entries(target, spec.path_entries)
        (target / READY).write_text(spec.describe() + "\n")
    return target


def _build(python: str, spec: EnvSpec, target: Path) -> None:
    """Install ``spec`` into a fresh environment at ``target`` with uv, then compile it.

    uv starts the environment's interpreter once, to learn what it is, before it
    installs anything: the environment holds only what ``uv venv`` put there then.
    Nothing starts it afterwards (no ``--compile-bytecode``, whose compile step runs
    that interpreter with ``site`` on, and so every ``.pth`` hook just installed).
    """
    uv = find_uv()
    requirements = [arg for f in spec.files for arg in ("-r", f)]
    index = ["--index-url", spec.index_url] if spec.index_url else []
    # --no-config: a project's own uv.toml or pyproject settings (a cache directory, an
    # index) do not steer the host's uv.
    steps = [
        [uv, "venv", "--quiet", "--no-config", "--python", python, str(target)],
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--no-config",
            *(["--no-build"] if spec.no_build else []),
            "--python",
            str(target / "bin" / "python"),
            *index,
            *[arg for loc in spec.find_links for arg in ("--find-links", loc)],
            *_find_links(),
            *spec.packages,
            *requirements,
        ],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, cwd=spec.cwd)
        if done.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise ConfigError(
                f"the sandbox's environment ({spec.describe()}) could not be installed "
                f"(uv exited {done.returncode}):\n{done.stderr.strip()[-4000:]}"
                + (
                    "\n(what a project or a requirements file asks for is installed from "
                    "wheels only: a source distribution, a path or a VCS requirement would "
                    "run its build code on this host; build its wheel and name that instead)"
                    if spec.no_build and "disabled" in done.stderr
                    else ""
                )
            )
    _compile(python, target)


_TIMESTAMPED = ("--invalidation-mode", "timestamp")


def _compile(python: str, target: Path) -> None:
    """Compile the bytecode of ``target``'s packages with the base interpreter ``python``.

    The environment is read-only inside a sandbox: without bytecode compiled now,
    every start would compile its imports from source again. ``-I -S``: no
    ``site``, so no ``.pth`` file, ``sitecustomize`` or ``usercustomize`` runs,
    and nothing from the environment is on ``sys.path``; ``compileall`` reads
    the sources and imports none of them. Timestamp-checked ``.pyc``, as
    ``--compile-bytecode`` made them: the files keep their paths and times in
    the sandbox, where the environment is mounted at the same place.
    """
    sites = [str(p) for p in target.glob("lib/python*/site-packages")]
    done = subprocess.run(
        [python, "-I", "-S", "-m", "compileall", "-q", "-j", "0", *_TIMESTAMPED, *sites],
        capture_output=True,
        text=True,
        cwd=target,
    )
    # 1: a file did not compile (a template, another Python's syntax), as pip allows.
    if done.returncode not in (0, 1):
        shutil.rmtree(target, ignore_errors=True)
        raise ConfigError(
            f"the sandbox's environment could not be compiled ({python} -m compileall "
            f"exited {done.returncode}):\n{done.stderr.strip()[-2000:]}"
        )


_driver_keys: dict[str, str] = {}  # interpreter -> its driver copy's key, once per process


def _driver_key(python: str) -> str:
    """The driver copy's key: the interpreter, and each source's name, size and modification
    time (looked at once per process: a start takes a few milliseconds)."""
    lines = [real_interpreter(python)]
    for path in sorted(DRIVER_SRC.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            st = path.stat()
            lines.append(f"{path.relative_to(DRIVER_SRC)} {st.st_size} {st.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:20]


def ready_driver(python: str) -> Path | None:
    """:func:`compiled_driver` of ``python`` if this process has it ready (a stat)."""
    key = _driver_keys.get(python)
    if key is None or not (cache_dir() / "drivers" / key / READY).exists():
        return None
    return cache_dir() / "drivers" / key / "sandlot_driver"


def compiled_driver(python: str) -> Path:
    """The driver package, copied into the cache with its bytecode compiled by the base
    interpreter ``python``: what a local sandbox binds as ``sandlot_driver``.

    A sandbox cannot write bytecode (the driver is bound read-only), and sandlot's own
    directory often holds none for the driver's modules: the host imports few of them, an
    install by uv compiles nothing unless asked, ``PYTHONDONTWRITEBYTECODE`` writes none,
    and a system-wide install may not be writable. Each cold start (and each template's)
    then compiled the driver from source (16 ms of a 56 ms cold start here). The copy is
    made once per interpreter and set of sources; should compiling fail, the copy serves
    from source as the original did.
    """
    root = cache_dir() / "drivers"
    key = _driver_keys[python] = _driver_key(python)
    target = root / key
    package = target / "sandlot_driver"
    if (target / READY).exists():
        return package
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / READY).exists():
            return package
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(DRIVER_SRC, package, ignore=shutil.ignore_patterns("__pycache__"))
        target.chmod(0o755)  # read by the sandbox's user through the bind
        if _host_base(python) and sys.implementation.cache_tag:
            try:
                _compile_here(package, sys.implementation.cache_tag)
            except (OSError, py_compile.PyCompileError) as exc:
                log.warning(
                    "sandlot: the driver's bytecode could not be compiled (%s); sandboxes "
                    "compile it as they start",
                    exc,
                )
        else:
            done = subprocess.run(  # as _compile: -I -S, nothing of any environment runs
                [python, "-I", "-S", "-m", "compileall", "-q", *_TIMESTAMPED, str(package)],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                log.warning(
                    "sandlot: the driver's bytecode could not be compiled (%s -m compileall "
                    "exited %d); sandboxes compile it as they start: %s",
                    python,
                    done.returncode,
                    done.stderr.strip()[-500:],
                )
        (target / READY).write_text(real_interpreter(python) + "\n")
    return package


def _host_base(python: str) -> bool:
    """Whether ``python`` is this process's own base interpreter. What it would make for a
    sandbox (an empty environment, the driver's bytecode) is then made here, without
    starting it: about 60 ms each of a machine's first start, spent side by side."""
    return real_interpreter(python) == base_python()


def _compile_here(package: Path, tag: str) -> None:
    """The bytecode of ``package``'s sources (a copy of :data:`DRIVER_SRC`), as ``python -I
    -S -m compileall`` of this process's interpreter writes it: timestamp-checked,
    unoptimized, in each directory's ``__pycache__`` under the interpreter's ``tag``
    (whatever ``-O`` or ``-X pycache_prefix`` this process runs with).

    Where sandlot's own directory holds that bytecode already (an install by pip compiles
    it; so does an import that may write it), it is copied instead of compiled: about 5 ms
    for all of it, against 30-50 ms here. Only bytecode an import of the copied source
    would use (:func:`_still_valid`); the rest is compiled. Each copy is written under a
    temporary name and renamed, as ``py_compile`` writes: a copy cut short (a full disk)
    is never left where an import would fail on it.
    """
    for source in sorted(package.rglob("*.py")):
        cfile = _pyc(source, tag)
        own = _pyc(DRIVER_SRC / source.relative_to(package), tag)
        data = _still_valid(own, source)
        if data is None:
            py_compile.compile(
                str(source),
                cfile=str(cfile),
                doraise=True,
                optimize=0,
                invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
            )
            continue
        cfile.parent.mkdir(exist_ok=True)
        mode = (source.stat().st_mode | 0o200) & 0o666  # py_compile's, as umask allows
        partial = cfile.with_name(f"{cfile.name}.{os.getpid()}")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            with open(fd, "wb") as out:
                out.write(data)
            os.replace(partial, cfile)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise


def installed_bytecode() -> tuple[int, int]:
    """How many of the driver's modules sandlot's own directory holds valid bytecode of
    (that a machine's first start copies instead of compiling), and how many there are."""
    sources = sorted(DRIVER_SRC.rglob("*.py"))
    tag = sys.implementation.cache_tag
    held = sum(_still_valid(_pyc(p, tag), p) is not None for p in sources)
    return held, len(sources)


def _pyc(source: Path, tag: str) -> Path:
    """Where an import by an interpreter of cache ``tag`` looks for ``source``'s unoptimized
    bytecode (``importlib.util.cache_from_source``, without this process's ``-O`` or
    ``-X pycache_prefix``)."""
    return source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"


def _still_valid(pyc: Path, source: Path) -> bytes | None:
    """The bytes of ``pyc`` if an import of ``source`` by this interpreter would use them:
    its magic number; checked by time (flags 0) for the source's time and size, or by
    hash (flags 3, as pip writes it where ``SOURCE_DATE_EPOCH`` is set) for the source's
    bytes; and a code object after the header (an import that failed to unmarshal it
    would fail, not compile the source). None for anything else (bytecode an import
    takes unchecked, by hash with flags 1, may not be the source's), or a file that
    cannot be read.

    Nor bytecode that someone the sources do not trust could have put there: a link, or
    a file or ``__pycache__`` that others may write or that is owned by neither the
    package directory's owner, root nor this user. (What the host itself imports from
    there needs no more; the template imports modules the host never does, as root.)
    """
    try:
        trusted = {os.stat(pyc.parent.parent).st_uid, 0, os.geteuid()}
        for path in (pyc.parent, pyc):
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) or st.st_mode & 0o022 or st.st_uid not in trusted:
                return None
        data = pyc.read_bytes()
        st = source.stat()
    except OSError:
        return None
    if data[:4] != importlib.util.MAGIC_NUMBER or len(data) < 16:
        return None
    flags = int.from_bytes(data[4:8], "little")
    if flags == 0:
        expected = struct.pack("<2I", int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF)
    elif flags == 3:
        try:
            expected = importlib.util.source_hash(source.read_bytes())
        except OSError:
            return None
    else:
        return None
    if data[8:16] != expected:
        return None
    try:
        code = marshal.loads(memoryview(data)[16:])
    except (EOFError, ValueError, TypeError):
        return None
    return data if isinstance(code, types.CodeType) else None


def _add_path_entries(target: Path, entries: tuple[str, ...]) -> None:
    """A ``.pth`` in the environment that puts ``entries`` on ``sys.path``.

    An ``import`` line rather than plain paths: ``site`` skips a path that does
    not exist yet, and the project is uploaded after the interpreter starts.
    """
    if not entries:
        return
    line = f"import sys; sys.path.extend(p for p in {list(entries)!r} if p not in sys.path)\n"
    for site in target.glob("lib/python*/site-packages"):
        (site / "_sandlot_project.pth").write_text(line)


def _pip_find_links() -> list[str]:
    """The find-links locations pip is configured with: ``PIP_FIND_LINKS`` or its config files."""
    if env := os.environ.get("PIP_FIND_LINKS"):
        return env.split()
    import configparser

    home = Path.home()
    files = [
        os.environ.get("PIP_CONFIG_FILE", ""),
        "/etc/xdg/pip/pip.conf",
        "/etc/pip.conf",
        str(home / ".pip" / "pip.conf"),
        str(home / ".config" / "pip" / "pip.conf"),
    ]
    found: list[str] = []
    for name in files:
        parser = configparser.ConfigParser()
        if name and parser.read(name) and parser.has_option("global", "find-links"):
            found = parser.get("global", "find-links").split()  # later files override
    return found


def _find_links() -> list[str]:
    """``--find-links`` for each location pip is configured with.

    uv does not read pip's configuration; honouring this one lets a machine that
    keeps wheels locally (a CPU build of torch, say) serve them to sandboxes too.
    """
    return [arg for loc in _pip_find_links() for arg in ("--find-links", loc)]


def _build_empty(python: str, target: Path) -> None:
    """An environment without packages (no uv needed: the interpreter's own venv), made in
    this process where ``python`` is its base interpreter (:func:`_host_base`)."""
    if _host_base(python):
        import venv  # 10 ms, once a machine

        class Builder(venv.EnvBuilder):
            """``python -m venv --without-pip`` as ``python`` itself makes it: linked to its
            real path, not to ``sys._base_executable``, which may lead through a link (uv's
            Pythons do), and a sandbox binds only what ``python`` resolves to."""

            def ensure_directories(self, env_dir: Any) -> Any:
                context = super().ensure_directories(env_dir)
                context.executable = python
                context.python_dir, context.python_exe = os.path.split(python)
                return context

        try:
            Builder(symlinks=True).create(target)
        except OSError as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise ConfigError(f"cannot create a virtual environment at {target}: {exc}") from None
        return
    done = subprocess.run(
        [python, "-I", "-m", "venv", "--without-pip", str(target)], capture_output=True, text=True
    )
    if done.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise ConfigError(
            f"cannot create a virtual environment with {python}: {done.stderr.strip()[-2000:]}"
        )


def real_interpreter(python: str) -> str:
    """The file the interpreter path ``python`` resolves to, links followed.

    Looked up once per absolute path and process (each start asks, and a lookup
    walks every component): a link retargeted while a host process runs (an
    upgrade of the interpreter it points to) is seen by the next process.
    """
    return _resolved(os.path.abspath(python))


@functools.lru_cache(maxsize=64)
def _resolved(path: str) -> str:
    return os.path.realpath(path)


def base_python() -> str:
    """The host's base interpreter (not a virtual environment's, whose packages are the host's)."""
    return real_interpreter(getattr(sys, "_base_executable", None) or sys.executable)
