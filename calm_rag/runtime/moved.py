"""Old module names that keep working after a module moved (deprecated, with a warning)."""

from __future__ import annotations

import importlib
import sys
import warnings


def moved(old: str, new: str) -> None:
    """Make the module named ``old`` the module ``new``: the same object, so its private
    names, its patches in tests and its registrations are the new module's."""
    module = importlib.import_module(new)
    warnings.warn(f"{old} moved to {new}; import it from there", DeprecationWarning,
                  stacklevel=3)
    sys.modules[old] = module
