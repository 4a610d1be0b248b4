"""The GPU check of issue 28: every CUDA path of calm_rag that one lent GPU machine can prove,
in one command under its limits (../shared/DESIGN.md, "The GPU machine").

    python bench/gpu_check.py --dry-run      # here: wheels, limits, the same steps on the CPU
    python bench/gpu_check.py --wheels-only  # the wheel set alone (`make gpu-wheels`)
    python bench/gpu_check.py --out DIR      # there (the device command --dry-run prints)

The machine has no network, torch 2.11 and transformers 5.17 but no TRL, datasets or faiss:
what is missing travels as wheels in the git-ignored ``.gpu-wheels/`` (bench/gpu_wheels.py),
installed there into a target folder first on PYTHONPATH. The models are built there, tiny
(bench/gpu_steps.py): the hf sampler under device_map in bf16, DPO (TRL + PEFT) with a
checkpoint, a kill and a resume, the log-prob scorer with the unmerged adapter, accelerate
launch with one process, embedding and a faiss-cpu search, and the demo experiment on the hf
backend. Each step prints its time and the figure that shows where it ran.

The dry run fails (exit 2, one line) when the wheel set is over 60 MiB, a wheel is not for
CPython 3.12 on x86-64, a travelling wheel needs what nothing provides, the device command is
over 2,000 characters, or the steps imported a module neither the machine nor the wheels hold.
"""

from __future__ import annotations

import os

# Before anything imports tqdm or the hub: progress bars would fill the 12,000 characters of
# output the device tool returns, and the machine has no network to try.
for _name, _value in {"TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
                      "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_name, _value)

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from packaging.requirements import Requirement  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import gpu_steps as steps  # noqa: E402
import gpu_wheels as wheels  # noqa: E402

from calm_rag.errors import InputError  # noqa: E402

ROOT = wheels.ROOT
# The device tool runs this in the repository root of the carried tree; $OUT comes back.
DEVICE_COMMAND = (
    f"python3 -m pip install -q --no-deps --no-index --target {wheels.TARGET} "
    f"{wheels.WHEEL_DIR}/*.whl && PYTHONPATH={wheels.TARGET}:$PWD "
    'python3 bench/gpu_check.py --out "$OUT"')
CARRY = [wheels.WHEEL_DIR]
# What this machine cannot prove, and why (printed on every run; README's "Scaling out").
NOT_CHECKABLE = {
    "vLLM (tensor and pipeline parallel, LoRA)": "its wheel is 336 MB and pins its own torch: "
    "over the 64 MiB a call carries, and the machine has no network; TP/PP also need 2+ GPUs",
    "faiss-gpu": "135 MB, over the 64 MiB a call carries; faiss-cpu ships the same `faiss` "
    "module and searches here instead",
    "multi-GPU accelerate, FSDP, DeepSpeed ZeRO": "one GPU on the machine (NCCL ranks need 2+); "
    "DeepSpeed is not installed there and PyPI has it as source that compiles its ops",
}
# Modules of the tree itself: they travel with it.
LOCAL_MODULES = ("calm_rag", "tests", "bench", "gpu_check", "gpu_steps", "gpu_wheels",
                 "gpu_hide", "sitecustomize", "__main__", "__mp_main__")


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.wheels_only:
            build_wheels()
            return 0
        if args.dry_run:
            return dry_run(args)
        return gpu_run(args)
    except InputError as err:
        print(f"gpu_check: error: {err}", file=sys.stderr)
        return 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="build and check the wheel set, then run the steps on the CPU")
    mode.add_argument("--wheels-only", action="store_true",
                      help=f"download and check the wheel set into {wheels.WHEEL_DIR}/ only")
    parser.add_argument("--work", help="folder for the models, index and runs (default: a "
                        "temporary one, removed at the end)")
    parser.add_argument("--out", help="where the run's report, metrics and the step times go")
    return parser.parse_args()


# --------------------------------------------------------------------------- wheels


def build_wheels() -> tuple[list[wheels.Wheel], int]:
    """Download the wheel set and check its tags, size and requirements; return it and its
    size in bytes."""
    pins = wheels.wanted()
    found = wheels.download(ROOT / wheels.WHEEL_DIR, pins)
    missing = sorted(set(pins) - {w.name for w in found})
    if missing:
        raise InputError(f"pip downloaded no wheel of {', '.join(missing)}",
                         path=wheels.WHEEL_DIR, hint="see pip's output above")
    for wheel in found:
        wheels.check_tags(wheel.path.name)
    total = wheels.check_size(found, tree_bytes())
    there = wheels.machine_closure(wheels.venv_requirements())
    unmet = wheels.unmet_requirements(
        {w.name: wheels.wheel_requirements(w.path) for w in found}, pins, there)
    if unmet:
        raise InputError("the wheel set misses requirements: " + "; ".join(unmet),
                         hint="add them to MISSING_THERE in bench/gpu_wheels.py")
    print(f"wheel set ({wheels.WHEEL_DIR}/, CPython 3.12 x86-64 tags checked):")
    for wheel in sorted(found, key=lambda w: -w.size):
        print(f"  {wheel.path.name:<70} {wheel.size / wheels.MIB:6.2f} MiB")
    print(f"  total {total / wheels.MIB:.2f} MiB of {wheels.WHEELS_LIMIT // wheels.MIB} MiB; "
          f"every requirement is met by the set or the machine")
    return found, total


def tree_bytes() -> int:
    """Bytes of the working tree the device tool carries (tracked and untracked files that git
    does not ignore)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    return sum((ROOT / name).stat().st_size for name in listed
               if name and (ROOT / name).is_file())


# --------------------------------------------------------------------------- the runs


def dry_run(args: argparse.Namespace) -> int:
    """The wheel set, the command line, then the steps on the CPU with every module the GPU
    machine lacks made unimportable, then the coverage check."""
    found, total = build_wheels()
    length = wheels.check_command(DEVICE_COMMAND)
    print_device_call(length)
    with work_folder(args.work) as work:
        blocked = block_absent({w.name for w in found}, work / "_hide")
        results, folder = steps.run_steps(work, steps.Target("cpu"))
        print_results(results, "CPU")
        report(folder, results, args.out)
        print_not_checkable()
        check_failures(results)
        check_coverage(work, {w.name for w in found})
    print(f"dry run: ok (wheels {total / wheels.MIB:.2f} MiB, command {length} characters, "
          f"{blocked} modules blocked, steps {sum(r.seconds for r in results):.0f} s on the CPU)")
    return 0


def block_absent(shipped: set[str], folder: Path) -> int:
    """Make unimportable, here and in every child the steps start, each module installed here
    that neither the GPU machine nor the wheel set has; return how many."""
    import importlib.metadata as metadata

    import gpu_hide

    allowed = [*wheels.machine_closure(wheels.venv_requirements(), shadowed=shipped),
               *shipped, "calm-rag"]
    names = wheels.blocked_modules(metadata.packages_distributions(), allowed)
    wheels.block(names)
    children = gpu_hide.hide_in_children(names, folder)
    print(f"blocked {len(names)} modules the GPU machine lacks (an import of one fails here"
          + (", and in the steps' child processes)" if children else "; NOT in the child "
             "processes: this Python has a sitecustomize of its own)"))
    return len(names)


def gpu_run(args: argparse.Namespace) -> int:
    """On the GPU machine: what runs, then every step on ``cuda``."""
    preflight()
    with work_folder(args.work) as work:
        results, folder = steps.run_steps(work, steps.Target("cuda"))
        print_results(results, "GPU")
        report(folder, results, args.out)
    print_not_checkable()
    check_failures(results)
    return 0


def check_failures(results: list[steps.StepResult]) -> None:
    """One line naming the failed steps (their tracebacks are above, on stderr)."""
    failed = [r.name for r in results if r.figure.startswith(steps.FAILED)]
    if failed:
        raise InputError(f"{len(failed)} of {len(results)} steps failed: {', '.join(failed)}",
                         hint="their tracebacks are printed above")


def preflight() -> None:
    """Refuse to run without a GPU; print the GPU and which copy of each package runs."""
    import torch

    if not torch.cuda.is_available():
        raise InputError("no CUDA device is visible", hint="run --dry-run on a machine "
                         "without a GPU")
    print(f"GPU: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible), torch "
          f"{torch.__version__}, CUDA {torch.version.cuda}, bf16 "
          f"{torch.cuda.is_bf16_supported()}, Python {sys.version.split()[0]}")
    print_versions()


def print_versions() -> None:
    """Which version of each carried package runs (the carried one, unless PYTHONPATH is
    wrong), what they require that is missing, and the machine's own key packages."""
    import importlib.metadata as metadata

    carried = {w.name: w.version for w in wheels.read_wheels(ROOT / wheels.WHEEL_DIR)}
    found = {name: _version(name) for name in carried}
    print("carried: " + ", ".join(f"{n} {v}" for n, v in sorted(found.items())))
    for name, version in sorted(carried.items()):
        if found[name] != version:
            print(f"  {name} {found[name]} runs, NOT the carried {version}: is {wheels.TARGET} "
                  "first on PYTHONPATH?")
    for name in carried:
        for need in wheels.applicable(metadata.requires(name) or []):
            if not _installed(need):
                print(f"  unmet on this machine: {name} needs {need}")
    print("the machine's: " + ", ".join(
        f"{n} {_version(n)}" for n in ("tokenizers", "safetensors", "numpy", "pyarrow", "scipy",
                                       "scikit-learn", "triton", "ipython")))


def _version(name: str) -> str:
    import importlib.metadata as metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def _installed(need: Requirement) -> bool:
    import importlib.metadata as metadata

    try:
        version = metadata.version(need.name)
    except metadata.PackageNotFoundError:
        return False
    return need.specifier.contains(version, prereleases=True)


class work_folder:
    """``--work`` as given, or a temporary folder removed at the end."""

    def __init__(self, given: str | None) -> None:
        self.given = Path(given) if given else None
        self.temporary: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        if self.given is not None:
            self.given.mkdir(parents=True, exist_ok=True)
            return self.given
        self.temporary = tempfile.TemporaryDirectory(prefix="calm-gpu-check-")
        return Path(self.temporary.name)

    def __exit__(self, *exc: object) -> None:
        if self.temporary is not None:
            self.temporary.cleanup()


def check_coverage(work: Path, shipped: set[str]) -> None:
    """Every module the steps imported (here, in the killed DPO child, and what a launched
    rank runs) is on the machine or in the wheel set."""
    import importlib
    import importlib.metadata as metadata

    for module in ("accelerate.commands.launch", "calm_rag.training.launched"):
        importlib.import_module(module)
    child = work / "dpo-child" / steps.MODULES_FILE
    if not child.is_file():
        raise InputError("the killed DPO child wrote no module list", path=child)
    imported = steps.imported_files() | json.loads(child.read_text(encoding="utf-8"))
    checked = {installed_package(name, file) for name, file in imported.items()
               if not travels_anyway(name, file)}
    there = wheels.machine_closure(wheels.venv_requirements(), shadowed=shipped)
    missing = wheels.uncovered_modules(checked, metadata.packages_distributions(), there,
                                       shipped, LOCAL_MODULES)
    if missing:
        raise InputError("the GPU path imports what neither the machine nor the wheel set "
                         "holds: " + ", ".join(missing),
                         hint="add their distributions to MISSING_THERE in bench/gpu_wheels.py")
    print(f"modules: the {len(checked)} top-level modules the steps imported from installed "
          "packages are on the machine or in the wheel set")


def installed_package(name: str, file: str | None) -> str:
    """The top-level package a module's file lies in under site-packages (scipy's extensions
    register top-level names such as ``_csparsetools``), else the module's own name."""
    parts = Path(file).parts if file else ()
    for marker in ("site-packages", "dist-packages"):
        if marker in parts[:-1]:
            top = parts[parts.index(marker) + 1]
            return top.split(".")[0]  # a single-file module: name.py, name.cpython-311-*.so
    return name


def travels_anyway(name: str, file: str | None) -> bool:
    """A module that needs no package there: made at run time by an extension (no file), of
    the standard library, of the tree itself, or calm_rag's editable-install finder."""
    import sysconfig

    if file is None or name.startswith("__editable__"):
        return True
    stdlib = {Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")}
    path = Path(file).resolve()
    if any(path.is_relative_to(folder) for folder in stdlib):
        return not any(part in ("site-packages", "dist-packages") for part in path.parts)
    return path.is_relative_to(ROOT) and ".venv" not in path.relative_to(ROOT).parts


# --------------------------------------------------------------------------- output


def print_device_call(length: int) -> None:
    print(f"device command ({length} characters of {wheels.COMMAND_LIMIT:,}):")
    print(f"  {DEVICE_COMMAND}")
    print(f"carry: {json.dumps(CARRY)}")


def print_results(results: list[steps.StepResult], where: str) -> None:
    print(f"{'step':<32} {where + ' s':>7}  figure")
    for result in results:
        print(f"{result.name:<32} {result.seconds:7.1f}  {result.figure}")


def print_not_checkable() -> None:
    print("not checkable on this machine:")
    for what, why in NOT_CHECKABLE.items():
        print(f"  {what}: {why}")


def first_section(markdown: str) -> str:
    """The report's first ``##`` section (its results table): the device tool returns only
    the last 12,000 characters of output."""
    sections = markdown.split("\n## ")
    return ("## " + sections[1]).strip() if len(sections) > 1 else markdown.strip()


def report(folder: Path | None, results: list[steps.StepResult], out: str | None) -> None:
    """Print the run's results table; with ``--out`` copy the report, its metrics and
    manifest (when the experiment ran) and the step times there."""
    if folder is not None:
        text = (folder / "report.md").read_text(encoding="utf-8")
        print(f"--- {folder / 'report.md'}, its results (all of it in --out) ---")
        print(first_section(text))
        print("---")
    if out is None:
        return
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    if folder is not None:
        for name in ("report.md", "metrics.json", "manifest.json"):
            shutil.copyfile(folder / name, target / name)
    (target / "steps.json").write_text(json.dumps(
        [{"step": r.name, "seconds": round(r.seconds, 2), "figure": r.figure}
         for r in results], indent=2, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"gpu_check: exit {code} after {time.perf_counter() - started:.0f} s")
    sys.exit(code)
