"""DCO plus DPO on gold labels (``align.method: gold-dpo-dco``): where the dataset gives each
question's answer, DPO's loss on the gold answer against each other answer is added to DCO's,
on the same rows, in one training (TRL's DPOTrainer underneath, as for ``dco``).

For one DCO row (languages 1 and 2, answers c and r; :mod:`calm_rag.training.dco`) with the
margins ``m_i = (c_i - rc_i) - (r_i - rr_i)`` of the policy over the reference::

    loss = DCO(row) + w * g * (-log σ(β_dpo m_1) - log σ(β_dpo m_2)),  averaged over the batch

where ``g`` is 1 when one of the two answers is the gold answer (the row is then turned so
that c is the gold answer: DCO's term is the same either way round) and 0 when neither is
(DPO has no preference between two wrong answers), ``w`` is ``align.dco.gold_dpo`` and
``β_dpo`` is DPO's β, ``align.beta``. Each language's gold pair is one DPO pair, as CALM's
DPO scores it, on the answer texts DCO scores (``align.dco.completions``).

The paper (Liu et al., ICML 2026, arXiv 2603.04678) reports that DCO complements DPO where
gold labels exist; the authors' released code (github Betswish/ConsistencyRL, as stored
here: ``DCOTrainer.dco_loss``, ``train_script.py``) holds no recipe for the combination, and
its text could not be read beyond the abstract here. The summed loss above, with weight 1,
is calm_rag's choice; running ``dpo`` (with ``align.target: gold``) and then ``dco`` from its
adapter is the sequential alternative, not offered as one method.

The gold answer is each question's own label (``Question.answer``), whatever ``align.target``
says: the method's name promises DPO on gold labels, never on the vote.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from calm_rag.errors import InputError
from calm_rag.records import PreferencePair, Sample, Vote
from calm_rag.training.common import (
    MakeTrainer,
    TrainResult,
    run_training,
    with_template_kwargs,
)
from calm_rag.training.config import AlignConfig
from calm_rag.training.dco import (
    DcoQuestion,
    DcoRow,
    checked_rows,
    dco_losses,
    dco_questions,
    dco_trainer,
    dco_trainer_class,
    refuse_dpo_loss_keys,
    write_rows_file,
)

log = logging.getLogger(__name__)

GOLD = "gold"
"""The TRL row's column saying whether the row compares the gold answer (1) or not (0)."""


# ------------------------------------------------------------------------------- the loss

def gold_dco_losses(policy: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                    reference: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                    gold: torch.Tensor, dco_beta: float, dpo_beta: float,
                    weight: float) -> torch.Tensor:
    """The loss per row: DCO's, plus ``weight`` times DPO's sigmoid loss on each language's
    margin where ``gold`` is 1 (the chosen answer is the gold one)."""
    c1, r1, c2, r2 = policy
    rc1, rr1, rc2, rr2 = reference
    m1 = (c1 - rc1) - (r1 - rr1)
    m2 = (c2 - rc2) - (r2 - rr2)
    dpo = -F.logsigmoid(dpo_beta * m1) - F.logsigmoid(dpo_beta * m2)
    return dco_losses(policy, reference, dco_beta) + weight * gold * dpo


# ---------------------------------------------------------------------------- the rows

@dataclass(frozen=True)
class GoldQuestion:
    """One question as DCO needs it, and its gold answer (None: the dataset gives none)."""

    question: DcoQuestion
    gold: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question.to_dict(), "gold": self.gold}


def gold_questions(samples: list[Sample], votes: list[Vote],
                   pairs: list[PreferencePair]) -> list[GoldQuestion]:
    """DCO's questions (:func:`~calm_rag.training.dco.dco_questions`) with their gold labels;
    an InputError where a question's languages label it differently."""
    golds: dict[tuple[str, str], set[str]] = {}
    for sample in samples:
        labels = golds.setdefault((sample.question.id, sample.setting), set())
        if sample.question.answer is not None:
            labels.add(sample.question.answer)
    for (qid, setting), labels in golds.items():
        if len(labels) > 1:  # DPO's preference would depend on the language asked
            raise InputError(f"question {qid} ({setting}) has different gold answers in its "
                             f"languages: {', '.join(sorted(labels))}", field="data",
                             hint="fix the dataset's answers, or use method dco")
    return [GoldQuestion(q, next(iter(golds[(q.question_id, q.setting)]), None))
            for q in dco_questions(samples, votes, pairs)]


def gold_first(row: DcoRow, gold: str | None) -> tuple[DcoRow, bool]:
    """The row turned so that ``chosen`` is the gold answer, and whether either answer is."""
    if row.rejected == gold:
        row = dataclasses.replace(row, chosen=row.rejected, rejected=row.chosen,
                                  chosen_1=row.rejected_1, rejected_1=row.chosen_1,
                                  chosen_2=row.rejected_2, rejected_2=row.chosen_2)
    return row, row.chosen == gold


def gold_rows(questions: list[GoldQuestion], config: AlignConfig
              ) -> tuple[list[DcoRow], list[bool], Counter[str]]:
    """DCO's rows (as ``align.dco`` asks), gold first, whether each compares the gold answer,
    and the skips; an InputError where no question has a gold answer or no row compares it."""
    if not any(q.gold for q in questions):
        raise InputError(f"method gold-dpo-dco trains DPO on gold labels, and none of the "
                         f"{len(questions)} questions has one", field="align.method",
                         hint="use a dataset with answers, or method dco")
    golds = {(q.question.question_id, q.question.setting): q.gold for q in questions}
    rows, skipped = checked_rows([q.question for q in questions], config)
    turned = [gold_first(row, golds[(row.question_id, row.setting)]) for row in rows]
    if not any(has for _, has in turned):
        raise InputError(f"none of the {len(rows)} DCO rows compares a gold answer, so DPO "
                         "would add nothing", field="align.dco.answers",
                         hint="answers: options compares every two options, gold included")
    return [row for row, _ in turned], [has for _, has in turned], skipped


# --------------------------------------------------------------------------- training

def train_gold_dco(model_path: str | Path, questions: list[GoldQuestion], config: AlignConfig,
                   out_dir: str | Path, adapter: str | None = None) -> TrainResult:
    """Train a LoRA adapter on DCO's loss plus DPO's on the gold pairs; write what
    :func:`~calm_rag.training.dco.train_dco` writes, with the rows comparing a gold answer
    (``gold_rows``) in ``rows.json``."""
    refuse_dpo_loss_keys(config)
    rows, has_gold, skipped = gold_rows(questions, config)
    log.info("gold-dpo-dco: %d of %d rows compare the gold answer", sum(has_gold), len(rows))
    trl_rows = [with_template_kwargs(row.trl_row() | {GOLD: int(has)}, config)
                for row, has in zip(rows, has_gold, strict=True)]
    result = run_training("gold-dpo-dco", model_path, trl_rows, config, out_dir,
                          gold_dco_trainer(config, trl_rows), adapter=adapter)
    write_rows_file(result, rows, len(questions), skipped, gold_rows=sum(has_gold))
    return result


def gold_dco_trainer(config: AlignConfig, rows: list[dict[str, Any]]) -> MakeTrainer:
    """What builds the trainer for these rows: DCO's, with DPO's term on the gold rows."""
    return dco_trainer(config, rows, gold_dco_trainer_class, dpo_beta=config.beta,
                       gold_weight=config.dco.gold_dpo)


@cache
def gold_dco_trainer_class() -> type:
    """DCO's trainer whose loss adds DPO's on the rows that compare the gold answer."""

    class GoldDcoTrainer(dco_trainer_class()):  # type: ignore[misc]
        """DCO's trainer reading each row's ``gold`` column: DPO's loss where it is 1."""

        row_columns = (GOLD,)

        def __init__(self, *args: Any, dpo_beta: float, gold_weight: float,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.dpo_beta, self.gold_weight = dpo_beta, gold_weight

        def row_losses(self, policy: Any, reference: Any, extra: dict[str, torch.Tensor],
                       mode: str) -> torch.Tensor:
            gold = extra[GOLD].to(policy[0].dtype)
            losses = gold_dco_losses(policy, reference, gold, self.beta, self.dpo_beta,
                                     self.gold_weight)
            dco = dco_losses(policy, reference, self.beta).detach()
            self._metrics[mode]["dco/gold_dpo"].append(
                self.accelerator.gather_for_metrics(losses.detach() - dco).float().mean().item())
            return losses

    return GoldDcoTrainer
