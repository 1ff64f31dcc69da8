"""Build Go programs from a wrapper module of our own, cached by version and content.

Upstream Go code is taken only as modules, by path and version, through the module proxy:
nothing of theirs is copied into this repo. A ``WrapperModule`` says what to build (packages
of required modules, or a directory of our own Go source), which modules to ``require`` and,
optionally, whose ``go.mod`` to take the ``replace`` block and ``godebug`` lines from (KubeVirt
and Kubernetes pin their dependencies there and cannot be built without it). The go.mod is
generated in a temp dir, built with ``-trimpath`` (``CGO_ENABLED=0`` unless the spec asks for
cgo), and the binaries are moved into place with one rename:

    <cache>/go/<name>/<version>/<key>/bin/<binary>

``<key>`` hashes every input (the spec, our source files, the Go toolchain's version), so a
changed input builds anew next to the old one. The cache root follows ``SLIRP_CONFORMANCE_CACHE``
(``slirp_conformance.cache_dirs.cache_root``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import file_lock
from slirp_conformance.cache_dirs import cache_root, process_alive
from slirp_conformance.errors import SetupError

MODULE_PREFIX = "slirp-conformance.local/"  # module path of every generated wrapper
BUILD_TIMEOUT = 3600.0  # one cold build of a Kubernetes component takes 10-15 min on 2 cores
STALE_TEMP_AGE = 6 * 3600.0  # a temp dir this old belongs to a build that died
_TEMP_PREFIX = ".tmp-"
_LOCK_NAME = ".lock"


@dataclass(frozen=True)
class WrapperModule:
    """What to build. ``packages`` are import paths (``"."`` = our own ``source`` directory).

    ``replace_from`` = ``"module@version"`` whose go.mod replace block and godebug lines the
    wrapper takes over. Replacements there that point at a directory of that repository
    (``./staging/...``) cannot work outside it: each becomes the same module at
    ``local_replace_version`` (KubeVirt publishes api/client-go at its own tag, Kubernetes its
    staging modules at ``v0.X.Y``), or is an error when that is not given. ``replaces`` adds or
    overrides single replacements (``("old/path", "new/path vX.Y.Z")``, or ``"./shims/<dir>"``: a
    nested module of our own, the folder ``<dir>`` of ``shims``, copied into the wrapper as
    ``shims/<dir>``; only the folders a replacement names are copied and hashed).
    """

    name: str
    version: str
    packages: tuple[str, ...]
    requires: tuple[str, ...] = ()  # "module@version"
    source: Path | None = None
    shims: Path | None = None
    replace_from: str | None = None
    local_replace_version: str | None = None
    replaces: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    ldflags: str = ""
    # A Go toolchain other than the machine's (``"go1.20.14"``: the module proxy serves it as
    # golang.org/toolchain), for module versions today's Go no longer compiles. None: the local Go.
    toolchain: str | None = None
    # cgo for the final `go build` (KubeVirt's virt-handler and virt-launcher need it); the
    # machine's C compiler and headers are then inputs the cache key does not see.
    cgo: bool = False

    def __post_init__(self) -> None:
        for what, value in (("name", self.name), ("version", self.version)):
            if not value or "/" in value or value.startswith("."):
                raise ValueError(f"wrapper module {what} {value!r} must be a plain path element")
        if not self.packages:
            raise ValueError(f"wrapper module {self.name}: name at least one package to build")
        if "." in self.packages and self.source is None:
            raise ValueError(f"wrapper module {self.name}: package '.' needs a source directory")
        if self._shim_dirs() and self.shims is None:
            raise ValueError(f"wrapper module {self.name}: a ./shims/ replacement needs the shims folder")
        for req in self.requires + ((self.replace_from,) if self.replace_from else ()):
            if "@" not in req:
                raise ValueError(f"wrapper module {self.name}: {req!r} must be module@version")

    def _shim_dirs(self) -> list[str]:
        return sorted({new.removeprefix("./shims/") for _, new in self.replaces if new.startswith("./shims/")})


def upstream_command(
    name: str, module: str, version: str, *, package: str | None = None, ldflags: str = "-s -w", **fields
) -> WrapperModule:
    """A command of an upstream module at ``version``, built as published: ``package`` (default the
    module's root package) of ``module@version``, stripped unless ``ldflags`` says otherwise."""
    return WrapperModule(
        name=name,
        version=version,
        packages=(package or module,),
        requires=(f"{module}@{version}",),
        ldflags=ldflags,
        **fields,
    )


@dataclass(frozen=True)
class Built:
    bin_dir: Path
    key: str
    cold: bool  # built by this call (False: found in the cache)
    seconds: float

    def binary(self, name: str) -> Path:
        path = self.bin_dir / name
        if not path.is_file():
            have = sorted(p.name for p in self.bin_dir.iterdir())
            raise SetupError(f"the Go build in {self.bin_dir} has no binary {name!r} (it has {have})")
        return path


def go_binary() -> str:
    """The `go` command: on PATH, else the official tarball's place."""
    found = shutil.which("go") or next((p for p in ("/usr/local/go/bin/go",) if os.access(p, os.X_OK)), None)
    if found is None:
        raise SetupError(
            "the Go toolchain is missing: install Go (https://go.dev/dl, into /usr/local/go) or put `go` on PATH"
        )
    return found


def _go_env(go: str, toolchain: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    flags = env.get("GOFLAGS", "")
    env.update(CGO_ENABLED="0", GOFLAGS=f"{flags} -buildvcs=false -mod=mod".strip(), GOWORK="off")
    if toolchain:
        env["GOTOOLCHAIN"] = toolchain  # fetched once through the module proxy, cached in GOMODCACHE
    else:
        env.setdefault("GOTOOLCHAIN", "local")  # never download another toolchain behind our back
    return env


def _go_version(go: str, toolchain: str | None = None) -> str:
    try:
        # A toolchain's first use downloads it (about 70 MB) through the module proxy.
        r = subprocess.run(
            [go, "env", "GOVERSION"], capture_output=True, text=True, timeout=600, env=_go_env(go, toolchain)
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SetupError(f"`{go} env GOVERSION` failed ({e}): reinstall Go") from e
    if r.returncode != 0 or not r.stdout.strip():
        raise SetupError(f"`{go} env GOVERSION` failed: {r.stderr.strip()[-200:]}: reinstall Go")
    return r.stdout.strip()


def source_snapshot(spec: WrapperModule) -> dict[str, bytes]:
    """Our Go files (``source``) and the shims (under ``shims/``), with the go.mod of each nested
    module, read once: the bytes that are hashed are the bytes that are built."""
    snapshot = _go_files(spec.source, "")
    for shim in spec._shim_dirs():
        assert spec.shims is not None  # __post_init__
        snapshot.update(_go_files(spec.shims / shim, f"shims/{shim}/", nested=False))
    return snapshot


def _go_files(folder: Path | None, prefix: str, nested: bool = True) -> dict[str, bytes]:
    """``folder``'s Go files, and the go.mod of the nested modules below it (``nested=False``: the
    folder is a module itself, its own go.mod included)."""
    if folder is None:
        return {}
    if not folder.is_dir():
        raise SetupError(f"Go source directory {folder} does not exist")
    return {
        prefix + str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (p.suffix in (".go", ".s") or (p.name == "go.mod" and (p.parent != folder or not nested)))
    }


def cache_key(spec: WrapperModule, go_version: str, snapshot: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    # Fields added later are hashed only when set, so the keys of existing cache entries stay. The
    # folders are not hashed by path (a checkout's place) but by their files, in ``snapshot``.
    fields = {
        k: v
        for k, v in spec.__dict__.items()
        if k not in ("source", "shims") and not (k == "toolchain" and v is None) and not (k == "cgo" and not v)
    }
    h.update(json.dumps(fields, sort_keys=True, default=str).encode())
    h.update(go_version.encode())
    for name, data in snapshot.items():
        h.update(name.encode() + b"\0" + data + b"\0")
    return h.hexdigest()[:16]


def spec_key(spec: WrapperModule) -> str:
    """The cache key ``build`` would use for ``spec``, without building anything."""
    return cache_key(spec, _go_version(go_binary(), spec.toolchain), source_snapshot(spec))


def module_dir(module_at_version: str) -> Path:
    """A module's directory in the Go module cache (``go mod download`` through the proxy if absent),
    for files a build reads from it (kind's node contract, Kubernetes' pause.c)."""
    go = go_binary()
    with tempfile.TemporaryDirectory(prefix="slirp-module-") as tmp:
        try:
            r = subprocess.run(
                [go, "mod", "download", "-json", module_at_version],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=600,
                env=_go_env(go),
            )
        except subprocess.TimeoutExpired:
            raise SetupError(f"`go mod download {module_at_version}` took more than 600 s: check GOPROXY") from None
    try:
        info = json.loads(r.stdout)
    except ValueError:
        info = {}
    if r.returncode != 0 or "Dir" not in info:
        reason = info.get("Error") or r.stderr.strip()[-300:]
        raise SetupError(f"cannot fetch {module_at_version} through the Go module proxy: {reason}; check GOPROXY")
    return Path(info["Dir"])


def _home(spec: WrapperModule, cache: Path | None) -> Path:
    """Where every build of one module version lives, one folder per cache key."""
    return (cache or cache_root()) / "go" / spec.name / spec.version


def cached(spec: WrapperModule, cache: Path | None = None) -> Built | None:
    """The binaries of ``spec`` when a finished build of these exact sources is in the cache, else
    None; never builds (a SetupError when the Go toolchain cannot even name its version)."""
    started = time.monotonic()
    key = spec_key(spec)
    final = _home(spec, cache) / key
    return Built(final / "bin", key, False, time.monotonic() - started) if (final / "bin").is_dir() else None


def build(spec: WrapperModule, cache: Path | None = None) -> Built:
    """Return the cached binaries of ``spec``, building them first when absent."""
    started = time.monotonic()
    go = go_binary()
    snapshot = source_snapshot(spec)
    key = cache_key(spec, _go_version(go, spec.toolchain), snapshot)
    home = _home(spec, cache)
    final = home / key
    if (final / "bin").is_dir():
        return Built(final / "bin", key, False, time.monotonic() - started)
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SetupError(
            f"cannot create the build cache {home} ({e.strerror}): point SLIRP_CONFORMANCE_CACHE "
            f"at a directory you can write"
        ) from None
    with _locked(home / _LOCK_NAME, spec):
        if (final / "bin").is_dir():  # another process built it while we waited
            return Built(final / "bin", key, False, time.monotonic() - started)
        sweep_stale_temp_dirs(home)
        print(
            f"gobuild: building {spec.name} {spec.version} (cold build, can take minutes; "
            f"cached afterwards under {final})",
            file=sys.stderr,
            flush=True,
        )
        work = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{key}-{os.getpid()}-", dir=home))
        try:
            log = home / f"build-{key}.log"  # kept here when the build fails
            _build_into(go, spec, snapshot, work, log)
            os.replace(log, work / "build.log")
            os.rename(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return Built(final / "bin", key, True, time.monotonic() - started)


def _locked(path: Path, spec: WrapperModule) -> AbstractContextManager[None]:
    """One builder per module version at a time (xdist workers, parallel runs); bounded wait."""
    return file_lock.held(
        path,
        f"another build of {spec.name} {spec.version}",
        BUILD_TIMEOUT,
        fix="stop that build or delete the directory",
    )


def sweep_stale_temp_dirs(home: Path) -> list[Path]:
    """Remove temp dirs of builds that died (their process is gone, or they are very old)."""
    swept = []
    for tmp in home.glob(f"{_TEMP_PREFIX}*"):
        try:
            pid = int(tmp.name[len(_TEMP_PREFIX) :].split("-")[1])
            age = time.time() - tmp.stat().st_mtime
        except (IndexError, ValueError, OSError):
            pid, age = 0, STALE_TEMP_AGE + 1
        if age > STALE_TEMP_AGE or not process_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
            swept.append(tmp)
    return swept


def _run(
    go: str, args: list[str], cwd: Path, log: Path, what: str, toolchain: str | None = None, cgo: bool = False
) -> str:
    with open(log, "a") as out:
        out.write(f"$ go {' '.join(args)}\n")
        out.flush()
        try:
            r = subprocess.run(
                [go, *args],
                cwd=cwd,
                env={**_go_env(go, toolchain), **({"CGO_ENABLED": "1"} if cgo else {})},
                stdout=subprocess.PIPE,
                stderr=out,
                text=True,
                timeout=BUILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise SetupError(f"{what} took over {BUILD_TIMEOUT:.0f} s: see {log}") from None
        out.write(r.stdout)
    if r.returncode != 0:
        tail = [ln for ln in log.read_text().splitlines() if ln.strip()][-1:]
        raise SetupError(f"{what} failed (exit {r.returncode}): {tail[0] if tail else ''} (full log: {log})")
    return r.stdout


def replacements_of(
    go: str,
    module_at_version: str,
    local_version: str | None,
    cwd: Path,
    log: Path,
    overridden: frozenset[str] = frozenset(),
    toolchain: str | None = None,
) -> tuple[list[str], list[str]]:
    """``go mod edit`` arguments for the replace block and godebug lines of a module's go.mod,
    read from the module cache (``go mod download -json``); ``overridden`` paths are left out."""
    info = json.loads(
        _run(
            go,
            ["mod", "download", "-json", module_at_version],
            cwd,
            log,
            f"`go mod download {module_at_version}`",
            toolchain,
        )
    )
    gomod = json.loads(
        _run(
            go,
            ["mod", "edit", "-json", info["GoMod"]],
            cwd,
            log,
            f"reading the go.mod of {module_at_version}",
            toolchain,
        )
    )
    edits = []
    for rep in gomod.get("Replace") or []:
        if rep["Old"]["Path"] in overridden:
            continue
        old = rep["Old"]["Path"] + (f"@{rep['Old']['Version']}" if rep["Old"].get("Version") else "")
        new = rep["New"]
        if new.get("Version"):
            edits.append(f"-replace={old}={new['Path']}@{new['Version']}")
        elif local_version:  # a directory of that repository: the published module instead
            edits.append(f"-replace={old}={rep['Old']['Path']}@{local_version}")
        else:
            raise SetupError(
                f"{module_at_version} replaces {old} with its own directory {new['Path']}: "
                "give the wrapper module a local_replace_version"
            )
    godebug = [f"-godebug={d['Key']}={d['Value']}" for d in gomod.get("GoDebug") or []]
    return edits, godebug


def _build_into(go: str, spec: WrapperModule, snapshot: dict[str, bytes], work: Path, log: Path) -> None:
    log.write_text(f"# gobuild {spec.name} {spec.version}: {spec}\n")
    mod = work / "mod"
    mod.mkdir()
    for name, data in snapshot.items():
        dest = mod / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    tc = spec.toolchain
    _run(go, ["mod", "init", MODULE_PREFIX + spec.name], mod, log, "`go mod init`", tc)
    edits: list[str] = []
    if spec.replace_from:
        replaces, godebug = replacements_of(
            go, spec.replace_from, spec.local_replace_version, mod, log, frozenset(old for old, _ in spec.replaces), tc
        )
        edits += replaces + godebug
    edits += [f"-require={req}" for req in spec.requires]
    edits += [f"-replace={old}={new.replace(' ', '@')}" for old, new in spec.replaces]  # "./shims/x": ours
    if edits:
        _run(go, ["mod", "edit", *edits], mod, log, "writing the wrapper go.mod", tc)
    build = ["build", "-trimpath", "-o", str(work / "bin") + "/"]
    if spec.tags:
        build.append("-tags=" + ",".join(spec.tags))
    if spec.ldflags:
        build.append("-ldflags=" + spec.ldflags)
    (work / "bin").mkdir()
    _run(go, [*build, *spec.packages], mod, log, f"`go build` of {spec.name} {spec.version}", tc, spec.cgo)
    if not any((work / "bin").iterdir()):
        raise SetupError(f"`go build` of {spec.name} {spec.version} made no binary (only libraries?): see {log}")
    shutil.copyfile(mod / "go.mod", work / "go.mod")  # what was built, for the curious
    shutil.rmtree(mod)
    os.chmod(work, 0o755)
