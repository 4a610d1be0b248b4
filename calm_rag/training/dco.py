"""Direct Consistency Optimization (DCO): align the policy's preference between two answers in
one language with the reference's preference in another, with TRL's DPOTrainer underneath.

For a question asked in languages 1 and 2 and two of its answers, c and r, each written in
both languages, with log-probabilities ``c1, r1, c2, r2`` under the policy and ``rc1, rr1,
rc2, rr2`` under the frozen reference::

    m_i = (c_i - rc_i) - (r_i - rr_i)      the policy's margin over the reference in language i
    o_i = rc_i - rr_i                       the reference's own preference in language i
    loss = |m_1 - o_2 / beta| + |m_2 - beta * o_1|,  averaged over the batch

The loss is unchanged when c and r swap, so it needs no vote and no gold label.

Read in the authors' reference code (github Betswish/ConsistencyRL), not copied:

- ``trl/trl/trainer/dco_trainer.py`` (``DCOTrainer.dco_loss``): the loss above, on
  log-probabilities summed over each completion's tokens (its ``concatenated_forward``), one
  forward for the four sequences of a row;
- ``train_script.py``: ``beta`` defaults to 1.0 (symmetric), learning rate 1e-5 (1e-6 for the
  larger models), one epoch, batches of 4, bf16, full fine-tuning;
- ``data/sampling.py``: a row is a question's prompt in each of two languages (drawn at random
  among the languages when there are more than two) and two candidate answers drawn at random
  among all the options, each completion being the candidate answer's text in that language.
  No sampled response and no vote enter the rows; its ``use_false_examples`` leaves the gold
  answer out of the candidates.

Here: every two options by default (``align.dco.answers``; the paper draws one pair at
random), every pair of languages or those asked for (``align.dco.languages``), each answer
written as the language writes it (the localized answer marker, the letter and the option
text: calm_rag's prompts ask for a letter) or a sampled response giving it
(``align.dco.completions``), and a LoRA adapter as for dpo.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import cache
from itertools import combinations
from pathlib import Path
from typing import Any

import torch

from calm_rag.errors import InputError
from calm_rag.io import write_json
from calm_rag.records import PreferencePair, Sample, Vote
from calm_rag.sampling.base import Messages
from calm_rag.sampling.chat import encode_chat, recorded_chat
from calm_rag.training.common import (
    MakeTrainer,
    TrainResult,
    new_lora,
    no_rows_left,
    run_training,
    with_template_kwargs,
)
from calm_rag.training.config import AlignConfig, DcoConfig

log = logging.getLogger(__name__)

ROWS_FILE = "rows.json"
"""What a training's rows were built from (rows, questions, skips), beside its log."""

# DPOConfig fields of DPO's own loss: DCO's loss would silently ignore them.
DPO_LOSS_KEYS = ("loss_type", "loss_weights", "ld_alpha", "f_divergence_type",
                 "f_alpha_divergence_coef", "label_smoothing", "rpo_alpha", "use_weighting",
                 "reference_free", "sync_ref_model", "precompute_ref_log_probs",
                 "discopop_tau", "use_liger_kernel")


# ------------------------------------------------------------------------------- the loss

def dco_losses(policy: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
               reference: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
               beta: float) -> torch.Tensor:
    """DCO's loss per row, from the log-probabilities ``(c1, r1, c2, r2)`` of the policy and
    of the reference (each of shape ``(batch,)``)."""
    c1, r1, c2, r2 = policy
    rc1, rr1, rc2, rr2 = reference
    m1 = (c1 - rc1) - (r1 - rr1)
    m2 = (c2 - rc2) - (r2 - rr2)
    o1, o2 = rc1 - rr1, rc2 - rr2
    return (m1 - o2 / beta).abs() + (m2 - beta * o1).abs()


def dco_loss(policy: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
             reference: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
             beta: float) -> torch.Tensor:
    """DCO's loss averaged over the batch (:func:`dco_losses`)."""
    return dco_losses(policy, reference, beta).mean()


# ---------------------------------------------------------------- what the rows are built from

@dataclass(frozen=True)
class DcoLanguage:
    """One question in one language, as DCO needs it: the sampler's prompt, the options, and
    the first response sampled for each answer."""

    instruction: str
    input: str
    options: dict[str, str]
    responses: dict[str, str]


@dataclass(frozen=True)
class DcoQuestion:
    """What ``method: dco`` trains on for one question in one setting (the method's
    ``rows``); :func:`dco_rows` turns it into training rows as ``align.dco`` asks."""

    question_id: str
    setting: str
    languages: dict[str, DcoLanguage]  # in the order the samples list them
    target: str | None = None  # the vote's answer (None: no vote, or undecided)
    sampled: tuple[str, ...] = ()  # the answers any language's samples gave, in option order
    rejected: tuple[str, ...] = ()  # the answers CALM's pairs reject against the target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dco_questions(samples: Iterable[Sample], votes: Iterable[Vote],
                  pairs: Iterable[PreferencePair]) -> list[DcoQuestion]:
    """The round's questions (one per question and setting, in sample order) with what DCO's
    rows are made of: each language's prompt, options and responses, the target and the
    answers CALM's pairs rejected."""
    targets = {(v.question_id, v.setting): v.answer for v in votes}
    rejected: dict[tuple[str, str], set[str]] = {}
    for pair in pairs:
        if pair.rejected_answer is not None:
            rejected.setdefault((pair.question_id, pair.setting), set()).add(pair.rejected_answer)
    grouped: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        grouped.setdefault((sample.question.id, sample.setting), []).append(sample)
    questions = []
    for key, group in grouped.items():
        languages = _languages(group)
        letters = [k for lang in languages.values() for k in lang.options]
        given = {s.answer for s in group}
        order = list(dict.fromkeys(letters))
        questions.append(DcoQuestion(
            question_id=key[0], setting=key[1], languages=languages, target=targets.get(key),
            sampled=tuple(k for k in order if k in given),
            rejected=tuple(k for k in order if k in rejected.get(key, ()))))
    return questions


def _languages(group: list[Sample]) -> dict[str, DcoLanguage]:
    """Each language of one question's samples: its first sample's prompt, and the first
    response (lowest index) giving each answer."""
    by_lang: dict[str, list[Sample]] = {}
    for sample in sorted(group, key=lambda s: s.index):
        by_lang.setdefault(sample.lang, []).append(sample)
    order = list(dict.fromkeys(s.lang for s in group))
    languages = {}
    for lang in order:
        mine = by_lang[lang]
        responses: dict[str, str] = {}
        for sample in mine:
            if sample.answer is not None:
                responses.setdefault(sample.answer, sample.text)
        first = mine[0]
        languages[lang] = DcoLanguage(first.instruction, first.input,
                                      dict(first.question.options), responses)
    return languages


# ---------------------------------------------------------------------------- the rows

@dataclass(frozen=True)
class DcoRow:
    """One training row: a question in languages 1 and 2, answer ``chosen`` and answer
    ``rejected`` (the names TRL's columns take; DCO's loss is the same either way round)."""

    question_id: str
    setting: str
    lang_1: str
    lang_2: str
    chosen: str
    rejected: str
    prompt_1: Messages
    prompt_2: Messages
    chosen_1: str
    rejected_1: str
    chosen_2: str
    rejected_2: str

    def trl_row(self) -> dict[str, Any]:
        """The conversational row :func:`dco_trainer_class`'s trainer reads: each side's
        prompt and completions."""
        def said(text: str) -> list[dict[str, str]]:
            return [{"role": "assistant", "content": text}]

        return {"prompt_1": self.prompt_1, "chosen_1": said(self.chosen_1),
                "rejected_1": said(self.rejected_1), "prompt_2": self.prompt_2,
                "chosen_2": said(self.chosen_2), "rejected_2": said(self.rejected_2)}


def dco_rows(questions: Iterable[DcoQuestion], options: DcoConfig
             ) -> tuple[list[DcoRow], Counter[str]]:
    """The training rows ``align.dco`` asks for, and how many it had to skip, by reason (a
    language without the option's text or a response giving it, a listed language the
    question was not asked in)."""
    rows: list[DcoRow] = []
    skipped: Counter[str] = Counter()
    for question in questions:
        for lang_1, lang_2 in language_pairs(question, options, skipped):
            for chosen, rejected in answer_pairs(question, options):
                row = _row(question, lang_1, lang_2, chosen, rejected, options.completions)
                if row is None:
                    skipped[f"no {options.completions[:-1]} for an answer"] += 1
                else:
                    rows.append(row)
    return rows, skipped


def language_pairs(question: DcoQuestion, options: DcoConfig,
                   skipped: Counter[str]) -> list[tuple[str, str]]:
    """The (language 1, language 2) pairs of one question; a pair naming a language the
    question was not asked in is counted in ``skipped``."""
    langs = list(question.languages)
    if options.languages == "all":
        return list(combinations(langs, 2))
    wanted = ([(options.pivot, lang) for lang in langs if lang != options.pivot]
              if options.languages == "pivot" else list(options.pairs))
    kept = [(a, b) for a, b in wanted if a in question.languages and b in question.languages]
    if options.languages == "pivot" and options.pivot not in question.languages:
        skipped["pivot not asked"] += 1
    skipped["language not asked"] += len(wanted) - len(kept)
    return kept


def answer_pairs(question: DcoQuestion, options: DcoConfig) -> list[tuple[str, str]]:
    """The (chosen, rejected) answers of one question: every two options, every two sampled
    answers, or the target against each answer CALM's pairs rejected."""
    if options.answers == "vote":
        target = question.target
        return [] if target is None else [(target, r) for r in question.rejected if r != target]
    if options.answers == "sampled":
        return list(combinations(question.sampled, 2))
    letters = dict.fromkeys(k for lang in question.languages.values() for k in lang.options)
    return list(combinations(letters, 2))


def _row(question: DcoQuestion, lang_1: str, lang_2: str, chosen: str, rejected: str,
         completions: str) -> DcoRow | None:
    """The row, or None where a language cannot give one of the answers."""
    texts = [_completion(question.languages[lang], lang, answer, completions)
             for lang in (lang_1, lang_2) for answer in (chosen, rejected)]
    chosen_1, rejected_1, chosen_2, rejected_2 = texts
    if chosen_1 is None or rejected_1 is None or chosen_2 is None or rejected_2 is None:
        return None
    return DcoRow(question.question_id, question.setting, lang_1, lang_2, chosen, rejected,
                  _prompt(question, lang_1), _prompt(question, lang_2),
                  chosen_1, rejected_1, chosen_2, rejected_2)


def _prompt(question: DcoQuestion, lang: str) -> Messages:
    """The chat the sampler asked the question with in ``lang``."""
    here = question.languages[lang]
    return recorded_chat(
        here.instruction, here.input,
        what=f"question {question.question_id} ({lang}, {question.setting})",
        hint="sample again with this version, which records the prompt fields")


def _completion(language: DcoLanguage, lang: str, answer: str, completions: str) -> str | None:
    """The answer as the language writes it (marker, letter, option text), or the response
    sampled for it; None where there is no such text."""
    if completions == "responses":
        return language.responses.get(answer)
    text = language.options.get(answer, "").strip()
    return f"{_marker(lang)} {answer}. {text}" if text else None


def _marker(lang: str) -> str:
    """The language's answer marker (``"Answer:"``, ``"答案:"``), the one its prompts show."""
    from calm_rag.languages import get_language

    return get_language(lang).answer_markers[0]


# --------------------------------------------------------------------------- training

def train_dco(model_path: str | Path, questions: list[DcoQuestion], config: AlignConfig,
              out_dir: str | Path, adapter: str | None = None) -> TrainResult:
    """Train a LoRA adapter with DCO on the rows ``align.dco`` asks for; write what
    :func:`~calm_rag.training.train_dpo` writes. With ``adapter`` (a previous round's) that
    adapter goes on training, a frozen copy of it the reference."""
    refuse_dpo_loss_keys(config)
    rows, skipped = checked_rows(questions, config)
    trl_rows = [with_template_kwargs(row.trl_row(), config) for row in rows]
    result = run_training("dco", model_path, trl_rows, config, out_dir,
                          dco_trainer(config, trl_rows), adapter=adapter)
    write_rows_file(result, rows, len(questions), skipped)
    return result


def checked_rows(questions: list[DcoQuestion], config: AlignConfig
                 ) -> tuple[list[DcoRow], Counter[str]]:
    """The rows ``align.dco`` asks for (the skips logged), or an InputError if none is left."""
    rows, skipped = dco_rows(questions, config.dco)
    if skipped:
        log.warning("dco: skipped %s", ", ".join(f"{n} ({why})" for why, n in skipped.items()))
    if not rows:
        raise InputError(f"no DCO rows to train on from {len(questions)} questions "
                         f"(skipped: {dict(skipped) or 'none'})", field="align.dco",
                         hint="ask two languages or more, and check align.dco.languages, "
                              "answers and completions")
    trained = {(row.question_id, row.setting) for row in rows}
    log.info("dco: %d rows from %d of %d questions", len(rows), len(trained), len(questions))
    return rows, skipped


def write_rows_file(result: TrainResult, rows: list[DcoRow], of_questions: int,
                    skipped: Counter[str], **extra: int) -> None:
    """Beside train_log.json: how many questions the rows came from, for the method grid."""
    trained = {(row.question_id, row.setting) for row in rows}
    write_json(result.folder / ROWS_FILE, {"built": len(rows), "questions": len(trained),
                                           "of_questions": of_questions,
                                           "skipped": dict(skipped)} | extra)


def refuse_dpo_loss_keys(config: AlignConfig) -> None:
    """``align.trainer`` keys of DPO's loss would be silently ignored by DCO's."""
    for key in config.trainer:
        if key in DPO_LOSS_KEYS:
            raise InputError(f"trainer.{key} sets DPO's loss, which method dco does not use",
                             field=f"align.trainer.{key}",
                             hint="drop it; align.dco.* sets DCO's loss")


def dco_trainer(config: AlignConfig, rows: list[dict[str, Any]],
                trainer_class: Callable[[], type] | None = None,
                **extra: Any) -> MakeTrainer:
    """What builds the DCO trainer for these rows (TRL's DPOTrainer, DCO's loss); a subclass
    of :func:`dco_trainer_class`'s (``trainer_class()``) gets ``extra`` as keywords."""

    def make_trainer(model: Any, tokenizer: Any, dataset: Any, args: dict[str, Any]) -> Any:
        from trl import DPOConfig

        if not any(_fits(tokenizer, row, config.max_length) for row in rows):
            raise no_rows_left(len(rows), config)
        # The reference's log-probs come from the same batch with the adapter switched off
        # (TRL's precompute stores two numbers a row; DCO needs four).
        args = {"precompute_ref_log_probs": False} | args
        return (trainer_class or dco_trainer_class)()(
            model=model, args=DPOConfig(beta=config.dco.beta, **args), train_dataset=dataset,
            processing_class=tokenizer, peft_config=new_lora(config, model), **extra)

    return make_trainer


def _fits(tokenizer: Any, row: dict[str, Any], max_length: int) -> bool:
    """Whether TRL keeps a row: both its prompts, as the model reads them, are under
    ``max_length``."""
    template = row.get("chat_template_kwargs")
    return all(len(encode_chat(tokenizer, row[key], template)) < max_length
               for key in ("prompt_1", "prompt_2"))


_SIDES = ("prompt", "chosen", "rejected")
_TOKENS = ("prompt_ids", "chosen_ids", "rejected_ids")


@cache
def dco_trainer_class() -> type:
    """TRL's DPOTrainer with DCO's rows and loss (built on first use: TRL takes seconds to
    import)."""
    from datasets import concatenate_datasets
    from trl import DPOTrainer

    class DcoTrainer(DPOTrainer):
        """TRL's DPOTrainer (PEFT, checkpoints, trackers, logging) with DCO's loss: each row
        holds both languages, tokenized as DPO's rows are, and one forward scores the four
        completions of every row of the batch. A subclass may add per-row columns that its
        loss reads (``row_columns``, numbers) and its own :meth:`row_losses`."""

        row_columns: tuple[str, ...] = ()

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.data_collator: Any = _BothSides(self.data_collator, self.row_columns)

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any,
                             dataset_name: str) -> Any:
            if "prompt_ids" in dataset.column_names:
                return dataset  # already prepared
            dataset = dataset.add_column("unit", list(range(len(dataset))))
            extra = [c for c in ("chat_template_kwargs",) if c in dataset.column_names]
            sides = []
            for side in (1, 2):
                names = {f"{name}_{side}": name for name in _SIDES}
                one = dataset.select_columns([*names, "unit", *extra]).rename_columns(names)
                sides.append(super()._prepare_dataset(one, processing_class, args,
                                                      f"{dataset_name} (language {side})"))
            first, second = _same_units(*sides)
            second = second.select_columns(list(_TOKENS)).rename_columns(
                {name: f"{name}_2" for name in _TOKENS})
            joined = concatenate_datasets(
                [first.select_columns(["unit", *_TOKENS]), second], axis=1)
            for column in self.row_columns:  # looked up by unit: TRL may have dropped rows
                values = dataset[column]
                joined = joined.add_column(column, [values[u] for u in joined["unit"]])
            return joined

        def _set_signature_columns_if_needed(self) -> None:
            if self._signature_columns is None:
                self._signature_columns: Any = ["unit", *_TOKENS, *(f"{t}_2" for t in _TOKENS),
                                                *self.row_columns]

        def _compute_loss(self, model: Any, inputs: dict[str, Any],
                          return_outputs: bool) -> Any:
            mode = "train" if self.model.training else "eval"
            # The loss's own columns never reach the model (nor TRL's reference forward).
            extra = {k: inputs[k] for k in self.row_columns}
            inputs = {k: v for k, v in inputs.items() if k not in self.row_columns}
            mask = inputs["completion_mask"]
            kwargs = {k: v for k, v in inputs.items() if k != "completion_mask"}
            labels = inputs["input_ids"].masked_fill(mask == 0, -100)
            outputs = model(**kwargs, labels=labels, use_cache=False, fused_lm_head=True)
            # Summed over the completion's tokens (prompt and padding score 0), as DPO's.
            logps = outputs.log_probs[:, -(mask.size(1) - 1):].sum(dim=1)
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model or model,
                                                                  inputs)
            # The batch is [chosen of language 1, of language 2, rejected of 1, of 2].
            c1, c2, r1, r2 = logps.chunk(4, dim=0)
            rc1, rc2 = ref_chosen.chunk(2, dim=0)
            rr1, rr2 = ref_rejected.chunk(2, dim=0)
            losses = self.row_losses((c1, r1, c2, r2), (rc1, rr1, rc2, rr2), extra, mode)
            loss = losses.mean()
            if self.aux_loss_enabled:
                loss = loss + self.aux_loss_coef * outputs.aux_loss
            self._log_dco((c1 - rc1) - (r1 - rr1), (c2 - rc2) - (r2 - rr2),
                          rc1 - rr1, rc2 - rr2, mode)
            return (loss, outputs) if return_outputs else loss

        def row_losses(self, policy: tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                           torch.Tensor],
                       reference: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                       extra: dict[str, torch.Tensor], mode: str) -> torch.Tensor:
            """The loss of each row of the batch (DCO's; ``extra``: the row columns)."""
            return dco_losses(policy, reference, self.beta)

        def _log_dco(self, m1: Any, m2: Any, o1: Any, o2: Any, mode: str) -> None:
            """The margins and the reference's preferences, averaged over the ranks."""
            for name, value in (("margin_1", m1), ("margin_2", m2), ("reference_1", o1),
                                ("reference_2", o2)):
                gathered = self.accelerator.gather_for_metrics(value.detach())
                self._metrics[mode][f"dco/{name}"].append(gathered.float().mean().item())

    return DcoTrainer


def _same_units(first: Any, second: Any) -> tuple[Any, Any]:
    """Both languages' tokenized rows for the same rows, in the same order: TRL drops a row
    whose prompt fills max_length, which may happen in one language only."""
    kept = set(first["unit"]) & set(second["unit"])
    if len(kept) < len(first) or len(kept) < len(second):
        first = first.filter(lambda row: row["unit"] in kept)
        second = second.filter(lambda row: row["unit"] in kept)
    if first["unit"] != second["unit"]:  # never expected: a mismatch would mis-pair rows
        raise RuntimeError("DCO's two languages lost their pairing while tokenizing")
    return first, second


@dataclass
class _BothSides:
    """Collates DCO rows as DPO's collator would 2×batch rows: language 1's, then 2's; each
    of ``columns`` becomes one float tensor, a value a row."""

    inner: Any
    columns: tuple[str, ...] = ()

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        ones = [{t: row[t] for t in _TOKENS} for row in examples]
        twos = [{t: row[f"{t}_2"] for t in _TOKENS} for row in examples]
        batch = dict(self.inner(ones + twos))
        for column in self.columns:
            batch[column] = torch.tensor([float(row[column]) for row in examples])
        return batch
