"""Vote presets by name (``calm-rag vote --policy``): whole vote configurations.

Kept apart from :mod:`calm_rag.vote.voting` so that importing the vote builds no configuration (a
``VoteConfig`` checks its chosen fallback, which imports :mod:`calm_rag.vote.pairs`).
"""

from __future__ import annotations

from calm_rag.registries import VOTE_PRESETS
from calm_rag.vote.voting import VoteConfig

VOTE_PRESETS.register("default", VoteConfig())

# CALM's released pairs, after get_final_ans and construct_DPO_data_ in the authors'
# utils/votingfunc.py (github.com/wangym2/CALM, commit 9d2bac4; "L107" is its line 107):
# - one pooled vote over every language's answers, lone characters such as "X" included, which
#   can win (L103-105); the pooling order is not in their repository: ja, fr, it, cn, de, en
#   is one of the 60 orders (all with ja first) under which their Llama pairs rebuild exactly;
# - a tie goes to the answer counted first in that order (L107: max() keeps the first key);
# - every response whose answer differs is rejected, one row each, in item then response order
#   (L220-229); responses without an answer are left out (get_ans records nothing for them);
# - the chosen text was a machine translation of the last agreeing response (L110-112,
#   L248-250), whose option line says E whenever the vote is not A-D (L288-297): offline a
#   language without an agreeing response borrows the pivot's instead.
VOTE_PRESETS.register("calm", VoteConfig(language_order=("ja", "fr", "it", "zh", "de", "en"),
                                         chosen_fallback="pivot"))
