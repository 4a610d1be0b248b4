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

Either way the model runs the prompt (hundreds of tokens with retrieved passages) once for all
the responses sampled from it, each response once after it, and each option after its
response, all in one packed forward pass (calm_rag/sampling/tree_pack.py): the n samples of a
prompt cost little more than one, and no key/value cache is copied.

>>> scorer = LetterScorer.load("smollm2-135m-instruct")
>>> samples = fill_unanswered(samples, scorer)   # unanswered ones now say extraction="logprob"
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from calm_rag.errors import InputError
from calm_rag.languages import get_language
from calm_rag.models import DEFAULT_GENERATOR, load_causal_lm, resolve_generator, torch_dtype
from calm_rag.records import Sample
from calm_rag.runtime.threads import torch_threads
from calm_rag.sampling.chat import encode_chat, recorded_chat
from calm_rag.sampling.tree_pack import Branch, TreePass, token_logprobs

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
class _Scored:
    """A sample's tokens to score: its prompt, its response and cue, and its options' ids."""

    index: int
    prompt: tuple[int, ...]
    tail: list[int]
    options: dict[str, list[int]]

    def cost(self, by: str) -> int:
        """Tokens this sample adds to a pass after its prompt (an option's last token is only
        predicted, never run)."""
        if by == "letter":
            return len(self.tail)
        return len(self.tail) + sum(len(ids) - 1 for ids in self.options.values())


class LetterScorer:
    """Scores the options of sampled responses with a causal LM's log-probabilities.

    ``pass_tokens`` bounds a forward pass (a prompt and a sample longer than that get a pass of
    their own): longer passes run fewer prompts again but attention grows with the square of
    the length; ``python bench/scoring.py --passes 512 1024 2048 4096`` compares them (1024,
    the default, was the fastest on 2 CPU cores).
    """

    def __init__(self, model: Any, tokenizer: Any, pass_tokens: int = 1024,
                 threads: int | None = None, by: str = "option", progress: bool = True) -> None:
        if pass_tokens < 1:
            raise InputError(f"must be at least 1, got {pass_tokens}", field="pass_tokens")
        if by not in SCORED_BY:
            raise InputError(f"unknown scoring {by!r}", field="by",
                             hint=f"use {' or '.join(SCORED_BY)}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pass_tokens, self.threads, self.by, self.progress = pass_tokens, threads, by, progress
        self._label_tokens: dict[str, tuple[int, ...]] = {}

    @classmethod
    def load(cls, model_name_or_path: str = DEFAULT_GENERATOR, dtype: str = "float32", *,
             device: str = "auto", device_map: str | None = None, adapter: str | None = None,
             **kwargs: Any) -> LetterScorer:
        """Load a model (the default's short name, a folder or a hub id) and its tokenizer,
        with the LoRA ``adapter`` folder applied when given (merged in memory).

        float32 by default: it works on every CPU, and the fallback decides between close
        log-probabilities (the pipeline asks for bfloat16 where the hardware has it).
        ``device`` (auto, cpu, cuda, cuda:N) and ``device_map`` (null or auto) as the ``hf``
        sampler's options, whose keys they are in errors (the pipeline passes its choice).
        """
        from calm_rag.runtime.hardware import check_device, resolve_device

        torch_dtype(dtype)  # a wrong dtype fails before the default is prepared
        check_device("generator.options.device", device, device_map)
        placed = (None if device_map is not None
                  else resolve_device(device, field="generator.options.device"))
        model, tokenizer = load_causal_lm(resolve_generator(model_name_or_path), dtype=dtype,
                                          device=placed, device_map=device_map,
                                          adapter=adapter,
                                          adapter_field="generator.options.adapter")
        return cls(model, tokenizer, **kwargs)

    def score(self, samples: Sequence[Sample],
              template_kwargs: Mapping[str, Any] | None = None) -> list[dict[str, float]]:
        """``{label: log-probability}`` of each sample's options after its response, in the
        question's label order. ``template_kwargs``: the ``chat_template_kwargs`` the samples
        were sampled with, so that the prompt is the one the model read."""
        import torch

        from calm_rag.runtime.progress import progress_bar

        scored = self._tokenize(samples, template_kwargs)
        results: list[dict[str, float]] = [{} for _ in samples]
        bar = progress_bar("scoring answers", len(samples), unit="sample",
                           enabled=self.progress)
        with torch.inference_mode(), torch_threads(self.threads), bar:
            for packed in self._passes(scored):
                for item, scores in zip(packed, self._score_pass(packed), strict=True):
                    results[item.index] = scores
                bar.update(len(packed))
        return results

    def _tokenize(self, samples: Sequence[Sample],
                  template_kwargs: Mapping[str, Any] | None = None) -> list[_Scored]:
        prompts: dict[tuple[str, str], tuple[int, ...]] = {}
        scored = []
        for index, sample in enumerate(samples):
            fields = (sample.instruction, sample.input)
            if fields not in prompts:
                prompts[fields] = tuple(self._prompt_ids(sample, template_kwargs))
            # The response is tokenized on its own, as it was generated after the prompt's ids.
            tail = self.tokenizer(sample.text.rstrip() + answer_cue(sample.lang),
                                  add_special_tokens=False)["input_ids"]
            options = {label: self._option_ids(sample.question.options[label])
                       for label in sample.question.labels}
            scored.append(_Scored(index, prompts[fields], tail, options))
        return scored

    def _prompt_ids(self, sample: Sample, template_kwargs: Mapping[str, Any] | None = None
                    ) -> list[int]:
        """Prompt ids exactly as the sampler encoded them."""
        chat = recorded_chat(sample.instruction, sample.input, what=f"sample {sample.id}",
                             field=None,
                             hint="score samples from calm_rag's sampling stage, which records "
                                  "them, or turn the logprob fallback off")
        return encode_chat(self.tokenizer, chat, template_kwargs)

    def _option_ids(self, text: str) -> list[int]:
        return self.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]

    def _passes(self, scored: list[_Scored]) -> list[list[_Scored]]:
        """The samples in forward passes of about ``pass_tokens`` tokens (one sample more
        when alone), those of one prompt together so that the prompt runs once per pass."""
        groups: dict[tuple[int, ...], list[_Scored]] = {}
        for item in scored:
            groups.setdefault(item.prompt, []).append(item)
        passes: list[list[_Scored]] = [[]]
        size, open_prompt = 0, None
        for prompt, members in groups.items():
            for item in members:
                added = item.cost(self.by) + (0 if prompt == open_prompt else len(prompt))
                if passes[-1] and size + added > self.pass_tokens:
                    passes.append([])
                    size, added = 0, item.cost(self.by) + len(prompt)
                passes[-1].append(item)
                size, open_prompt = size + added, prompt
        return [packed for packed in passes if packed]

    def _score_pass(self, packed: list[_Scored]) -> list[dict[str, float]]:
        """Scores of one pass: its prompts once, each response after its prompt, each option
        after its response, all in one packed row (calm_rag/sampling/tree_pack.py)."""
        tree, roots = TreePass(), {}
        reads: list[list[tuple[str, list[tuple[int, int]]]]] = []
        for item in packed:
            if item.prompt not in roots:
                roots[item.prompt] = tree.add(item.prompt)
            tail = tree.add(item.tail, parent=roots[item.prompt])
            reads.append([(label, self._cells(tree, tail, ids, label))
                          for label, ids in item.options.items()])
        found = iter(token_logprobs(self.model, tree, [cell for labels in reads
                                                       for _, cells in labels for cell in cells]))
        reduce = max if self.by == "letter" else (lambda values: sum(values) / len(values))
        return [{label: reduce([next(found) for _ in cells]) for label, cells in labels}
                for labels in reads]

    def _cells(self, tree: TreePass, tail: Branch, ids: list[int], label: str
               ) -> list[tuple[int, int]]:
        """(row, token) pairs whose next-token log-probabilities make the label's score.

        The response's last row predicts the option's first token (or the label, by letter);
        the option's own rows, added to ``tree`` here, predict the rest of it.
        """
        if self.by == "letter":
            return [(tail.last, token) for token in self._tokens(label)]
        option = tree.add(ids[:-1], parent=tail)
        return [(tail.last, ids[0])] + [(option.first + k, ids[k + 1])
                                        for k in range(len(ids) - 1)]

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


def fill_unanswered(samples: Sequence[Sample], scorer: LetterScorer,
                    template_kwargs: Mapping[str, Any] | None = None) -> list[Sample]:
    """The samples, in order, with every ``answer=None`` one given its best-scoring label
    (``template_kwargs``: the ``chat_template_kwargs`` they were sampled with)."""
    missing = [i for i, s in enumerate(samples) if s.answer is None]
    filled = list(samples)
    if not missing:
        return filled
    scores = scorer.score([samples[i] for i in missing], template_kwargs)
    for i, by_label in zip(missing, scores, strict=True):
        # Ties go to the first label in the question's order.
        best = max(samples[i].question.labels, key=by_label.__getitem__)
        filled[i] = dataclasses.replace(samples[i], answer=best, extraction=METHOD)
    log.info("log-prob fallback answered %d of %d samples", len(missing), len(samples))
    return filled
