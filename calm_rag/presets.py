"""Vote presets by name (``calm-rag vote --policy``): whole vote configurations.

Kept apart from :mod:`calm_rag.voting` so that importing the vote builds no configuration (a
``VoteConfig`` checks its chosen fallback, which imports :mod:`calm_rag.pairs`).
"""

from __future__ import annotations

from calm_rag.registries import VOTE_PRESETS
from calm_rag.voting import VoteConfig

VOTE_PRESETS.register("default", VoteConfig())

# CALM's released pairs: one pooled vote, ties to the answer met first in ja, fr, it, cn, de,
# en; languages without an agreeing response borrow one (CALM machine-translated it).
VOTE_PRESETS.register("calm", VoteConfig(language_order=("ja", "fr", "it", "zh", "de", "en"),
                                         chosen_fallback="pivot"))
