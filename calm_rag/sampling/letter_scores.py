"""The log-prob fallback: when extraction reads no letter, ask the model which option it meant.

After the prompt and the response, the scorer appends a new line and the language's answer
marker ("Answer:", "答案:", "Réponse:") and scores each option by the model's log-probabilities
of what would follow:

- ``by="option"`` (default): the mean log-probability per token of the option's text
  (" refrigerator"). A response that explains its choice but forgets the final line names the
  option's text far more often than its letter, and small models copy text well;
- ``by="letter"``: the next-token log-probability of the label ("A" or " A", the likelier).
  A little cheaper (no option tokens to run), but SmolLM2-135M puts most of its mass on one
  letter whatever the response says, so it suits larger models only.

Either way each sample's context (prompt, response, cue: hundreds of tokens with retrieved
passages) runs once; the options then run as short continuations of its key/value cache.

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
from calm_rag.sampling.hf import DTYPES
from calm_rag.sampling.prompts import messages_from_fields
from calm_rag.threads import torch_threads

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
class _Option:
    """One option to score: its label, its tokens and its sample's row in the context batch."""

    row: int
    label: str
    ids: list[int]


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

        contexts = [self._context_ids(sample) for sample in samples]
        # Longest first: mini-batches of similar lengths waste little on padding.
        order = sorted(range(len(samples)), key=lambda i: -len(contexts[i]))
        results: list[dict[str, float]] = [{} for _ in samples]
        bar = tqdm(total=len(samples), desc="scoring answers", unit="sample",
                   disable=not self.progress)
        with torch.inference_mode(), torch_threads(self.threads), bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                found = self._score_batch([samples[i] for i in batch],
                                          [contexts[i] for i in batch])
                for i, scores in zip(batch, found, strict=True):
                    results[i] = scores
                bar.update(len(batch))
        # In the question's label order, whatever order the batches ran in.
        return [{label: found[label] for label in sample.question.labels}
                for found, sample in zip(results, samples, strict=True)]

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

    def _score_batch(self, samples: list[Sample], contexts: list[list[int]]
                     ) -> list[dict[str, float]]:
        """Scores of a mini-batch: each context runs once, the options continue from its cache."""
        after, cache, mask = self._run_contexts(contexts)
        if self.by == "letter":  # the token after the cue
            return [{label: max(float(logprobs[t]) for t in self._tokens(label))
                     for label in sample.question.labels}
                    for logprobs, sample in zip(after, samples, strict=True)]
        options = [_Option(row, label, self._option_ids(text))
                   for row, sample in enumerate(samples)
                   for label, text in sample.question.options.items()]
        tails = self._continuations(options, cache, mask)
        scores: list[dict[str, float]] = [{} for _ in samples]
        for option, tail in zip(options, tails, strict=True):
            # The context's last position predicts the option's first token, the rest its tail.
            first = float(after[option.row, option.ids[0]])
            scores[option.row][option.label] = (first + tail) / len(option.ids)
        return scores

    def _option_ids(self, text: str) -> list[int]:
        return self.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]

    def _run_contexts(self, contexts: list[list[int]]) -> tuple[Any, Any, Any]:
        """Next-token log-probabilities after each context, the contexts' key/value cache and
        their attention mask.

        Left-padded, so every context ends in the last column: only that position needs the
        vocabulary projection (``logits_to_keep``), and the options all continue from there.
        """
        import torch

        device = self.model.device
        width = max(len(ids) for ids in contexts)
        input_ids = torch.tensor([[self._pad] * (width - len(ids)) + ids for ids in contexts])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in contexts],
                            device=device)
        # Left padding shifts positions; count them from each sequence's first real token
        # (RoPE models do not mind a shift, models with absolute positions do).
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids.to(device), attention_mask=mask,
                         position_ids=positions, use_cache=True, logits_to_keep=1)
        after = torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu()
        return after, out.past_key_values, mask

    def _continuations(self, options: list[_Option], cache: Any, mask: Any) -> list[float]:
        """Each option's summed log-probability of its tokens after the first.

        Mini-batches of ``batch_size`` options, longest first; a one-token option has none.
        """
        tails = [0.0] * len(options)
        longer = sorted((k for k, option in enumerate(options) if len(option.ids) > 1),
                        key=lambda k: -len(options[k].ids))
        for start in range(0, len(longer), self.batch_size):
            chunk = longer[start : start + self.batch_size]
            found = self._run_options([options[k] for k in chunk], cache, mask)
            for k, tail in zip(chunk, found, strict=True):
                tails[k] = tail
        return tails

    def _run_options(self, options: list[_Option], cache: Any, mask: Any) -> list[float]:
        """Run the options' tokens but the last after a copy of their contexts' cache rows.

        The last token is only predicted, never attended to, so it need not run.
        """
        import torch
        from transformers import DynamicCache

        device = mask.device
        rows = torch.tensor([option.row for option in options], device=device)
        width = max(len(option.ids) for option in options) - 1
        # Right-padded: the padding follows every real token, so no real token attends to it.
        inputs = torch.tensor([o.ids[:-1] + [self._pad] * (width + 1 - len(o.ids))
                               for o in options], device=device)
        targets = torch.tensor([o.ids[1:] + [0] * (width + 1 - len(o.ids)) for o in options],
                               device=device)
        real = torch.tensor([[1] * (len(o.ids) - 1) + [0] * (width + 1 - len(o.ids))
                             for o in options], device=device)
        # An option continues its context at the context's own length, whatever its padding.
        positions = mask.sum(dim=1)[rows, None] + torch.arange(width, device=device)
        past = DynamicCache([(layer.keys[rows], layer.values[rows]) for layer in cache.layers],
                            config=self.model.config)
        logits = self.model(input_ids=inputs, attention_mask=torch.cat([mask[rows], real], 1),
                            position_ids=positions, past_key_values=past, use_cache=True).logits
        picked = torch.log_softmax(logits.float(), dim=-1).gather(2, targets[..., None])[..., 0]
        return [float(sum(row[: len(o.ids) - 1])) for row, o in zip(picked.cpu().tolist(),
                                                                      options, strict=True)]

    @property
    def _pad(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

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
