"""The log-prob fallback: when extraction reads no letter, ask the model which option it meant.

After the prompt and the response, the scorer appends a new line and the language's answer
marker ("Answer:", "答案:", "Réponse:") and scores each option by the model's log-probabilities
of what would follow:

- ``by="option"`` (default): the mean log-probability per token of the option's text
  (" refrigerator"). A response that explains its choice but forgets the final line names the
  option's text far more often than its letter, and small models copy text well;
- ``by="letter"``: the next-token log-probability of the label ("A" or " A", the likelier).
  Cheaper (one forward pass per sample, not one per option), but SmolLM2-135M puts most of its
  mass on one letter whatever the response says, so it suits larger models only.

>>> scorer = LetterScorer.load("smollm2-135m-instruct")
>>> samples = fill_unanswered(samples, scorer)   # unanswered ones now say extraction="logprob"
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from calm_rag.errors import InputError
from calm_rag.languages import get_language
from calm_rag.records import Sample
from calm_rag.sampling.default_model import DEFAULT_GENERATOR, resolve_generator
from calm_rag.sampling.hf import DTYPES, _available_cores, _threads
from calm_rag.sampling.prompts import messages_from_fields

log = logging.getLogger(__name__)

METHOD = "logprob"
"""The ``Sample.extraction`` of an answer chosen by the scorer."""

SCORED_BY = ("option", "letter")


def answer_cue(lang: str) -> str:
    """What follows the response: a new line and the language's first answer marker.

    The space after the marker belongs to what is scored (" A", " refrigerator"): a trailing
    space would be a token of its own, one the model rarely sees there.
    """
    return "\n" + get_language(lang).answer_markers[0]


@dataclasses.dataclass(frozen=True)
class _Row:
    """One sequence to run: a sample's context, plus one option's tokens when ``by="option"``."""

    sample: int
    label: str | None
    ids: list[int]
    scored: int  # how many trailing ids are the option's text (0: read the next token)


class LetterScorer:
    """Scores the options of sampled responses with a causal LM's log-probabilities."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16,
                 threads: int | None = None, by: str = "option", progress: bool = True) -> None:
        if batch_size < 1:
            raise InputError(f"must be at least 1, got {batch_size}", field="batch_size")
        if by not in SCORED_BY:
            raise InputError(f"unknown scoring {by!r}", field="by",
                             hint=f"use {' or '.join(SCORED_BY)}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size, self.threads, self.by, self.progress = batch_size, threads, by, progress
        self._label_tokens: dict[str, tuple[int, ...]] = {}

    @classmethod
    def load(cls, model_name_or_path: str = DEFAULT_GENERATOR, dtype: str = "float32",
             **kwargs: Any) -> LetterScorer:
        """Load a model (the default's short name, a folder or a hub id) and its tokenizer.

        float32 by default: on a CPU it is faster than bfloat16, and the fallback decides
        between close log-probabilities.
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}", field="dtype",
                             hint=f"use {', '.join(DTYPES)}")
        path = resolve_generator(model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype="auto" if dtype == "auto" else getattr(torch, dtype))
        return cls(model, AutoTokenizer.from_pretrained(path), **kwargs)

    def score(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        """``{label: log-probability}`` of each sample's options after its response."""
        import torch
        from tqdm.auto import tqdm

        rows = self._rows(samples)
        # Longest first: mini-batches of similar lengths waste little on padding.
        rows.sort(key=lambda row: -len(row.ids))
        results: list[dict[str, float]] = [{} for _ in samples]
        bar = tqdm(total=len(rows), desc="scoring answers", unit="seq",
                   disable=not self.progress)
        with torch.inference_mode(), _threads(self.threads or _available_cores()), bar:
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start : start + self.batch_size]
                logprobs = self._logprobs(batch)
                for row, lp in zip(batch, logprobs, strict=True):
                    results[row.sample].update(self._row_scores(row, lp, samples[row.sample]))
                bar.update(len(batch))
        # In the question's label order, whatever order the batches ran in.
        return [{label: found[label] for label in sample.question.labels}
                for found, sample in zip(results, samples, strict=True)]

    def _rows(self, samples: Sequence[Sample]) -> list[_Row]:
        rows = []
        for i, sample in enumerate(samples):
            context = self._context_ids(sample)
            if self.by == "letter":
                rows.append(_Row(i, None, context, 0))
                continue
            for label, text in sample.question.options.items():
                option = self.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]
                rows.append(_Row(i, label, context + option, len(option)))
        return rows

    def _context_ids(self, sample: Sample) -> list[int]:
        """Prompt ids exactly as the sampler encoded them, then the response and the cue."""
        if not (sample.instruction or sample.input):
            raise InputError(
                f"sample {sample.id} has no recorded prompt (instruction and input are empty)",
                hint="score samples from calm_rag's sampling stage, which records them, "
                     "or turn the logprob fallback off")
        chat = messages_from_fields(sample.instruction, sample.input)
        if self.tokenizer.chat_template is None:  # a base model: plain text, as HFSampler does
            prompt = self.tokenizer("\n\n".join(m["content"] for m in chat) + "\n")["input_ids"]
        else:
            prompt = self.tokenizer.apply_chat_template(
                chat, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
        # The response is tokenized on its own, as it was generated after the prompt's ids.
        tail = sample.text.rstrip() + answer_cue(sample.lang)
        return list(prompt) + self.tokenizer(tail, add_special_tokens=False)["input_ids"]

    def _logprobs(self, batch: list[_Row]) -> Any:
        """Log-softmax over the vocabulary at each row's last ``scored + 1`` positions.

        Rows are left-padded, so their ends line up and only the last few positions need the
        vocabulary projection (``logits_to_keep``): the full ``[batch, length, vocab]`` logits
        of a 49k-token vocabulary would take gigabytes.
        """
        import torch

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(row.ids) for row in batch)
        input_ids = torch.tensor([[pad] * (width - len(row.ids)) + row.ids for row in batch])
        mask = torch.tensor([[0] * (width - len(row.ids)) + [1] * len(row.ids) for row in batch])
        # Left padding shifts positions; count them from each sequence's first real token
        # (RoPE models do not mind a shift, models with absolute positions do).
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        keep = max(row.scored for row in batch) + 1
        device = self.model.device
        logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                            position_ids=positions.to(device), logits_to_keep=keep).logits
        return torch.log_softmax(logits[:, -keep:].float(), dim=-1).cpu()

    def _row_scores(self, row: _Row, logprobs: Any, sample: Sample) -> dict[str, float]:
        if row.label is None:  # by letter: the token after the cue
            return {label: max(float(logprobs[-1, t]) for t in self._tokens(label))
                    for label in sample.question.labels}
        # Position p predicts token p + 1: the option's tokens are predicted from the position
        # before each of them, the last one from the second-to-last kept position.
        option = row.ids[len(row.ids) - row.scored :]
        first = logprobs.shape[0] - row.scored - 1
        total = sum(float(logprobs[first + j, t]) for j, t in enumerate(option))
        return {row.label: total / row.scored}

    def _tokens(self, label: str) -> tuple[int, ...]:
        """The single tokens that write ``label`` after the marker: "A" and " A", if one token."""
        if label not in self._label_tokens:
            forms = [self.tokenizer(form, add_special_tokens=False)["input_ids"]
                     for form in (label, " " + label)]
            tokens = tuple(dict.fromkeys(ids[0] for ids in forms if len(ids) == 1))
            if not tokens:
                raise InputError(f"option label {label!r} is not one token of this tokenizer",
                                 field="by", hint="score by option text (by='option')")
            self._label_tokens[label] = tokens
        return self._label_tokens[label]


def fill_unanswered(samples: Sequence[Sample], scorer: LetterScorer) -> list[Sample]:
    """The samples, in order, with every ``answer=None`` one given its best-scoring label."""
    missing = [i for i, s in enumerate(samples) if s.answer is None]
    filled = list(samples)
    if not missing:
        return filled
    scores = scorer.score([samples[i] for i in missing])
    for i, by_label in zip(missing, scores, strict=True):
        # Ties go to the first label in the question's order.
        best = max(samples[i].question.labels, key=by_label.__getitem__)
        filled[i] = dataclasses.replace(samples[i], answer=best, extraction=METHOD)
    log.info("log-prob fallback answered %d of %d samples", len(missing), len(samples))
    return filled
