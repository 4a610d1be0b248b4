"""The ``openai`` backend: any OpenAI-compatible chat server (``vllm serve``, SGLang, llama.cpp's
``llama-server``), through the ``openai`` client: its timeouts, and its retries with exponential
backoff (and the server's Retry-After) when a server is busy (429), restarting (5xx) or slow.

Every prompt of a call is submitted at once to a pool of ``concurrency`` threads, so the server
batches them as it likes (vLLM and SGLang batch continuously). Each prompt is seeded from the
call's seed and its own messages, so its texts do not depend on which prompts share the call.

>>> # vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --port 8000
>>> sampler = make_sampler("openai", {"base_url": "http://127.0.0.1:8000/v1"},
...                        model="HuggingFaceTB/SmolLM2-135M-Instruct")
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.sampling.base import SAMPLERS, Messages, Sampler
from calm_rag.sampling.params import SamplingParams

log = logging.getLogger(__name__)

START_HINT = ("start one with `vllm serve <model>` (or SGLang, llama.cpp's llama-server) and "
              "set generator.options.base_url to its /v1 address")
# Request keys the openai client takes by name; the others go in its extra_body.
CLIENT_KEYS = frozenset({"model", "messages", "n", "temperature", "top_p", "max_tokens", "seed",
                         "stop"})
# Sent as the key when none is set: the client needs one; a server without keys ignores it.
NO_KEY = "EMPTY"
# A request parameter the server rejects ("param" in its error) names this config key.
PARAM_FIELDS = {"model": "generator.model", "n": "sampling.n", "seed": "sampling.seed",
                "temperature": "sampling.temperature", "top_p": "sampling.top_p",
                "max_tokens": "sampling.max_tokens", "stop": "sampling.stop",
                "top_k": "sampling.top_k", "min_p": "sampling.min_p",
                "chat_template_kwargs": "sampling.chat_template_kwargs"}


@dataclass(frozen=True)
class OpenAIOptions:
    """Parameters of the ``openai`` sampler (``generator.options`` when ``backend: openai``)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """The server's OpenAI API root, up to and including /v1."""
    adapter: str | None = None
    """A LoRA adapter the server serves (started with ``--enable-lora --lora-modules
    NAME=PATH``): its served name, or its folder, found among the server's models by its path
    or by its NAME (a training's ``.../align/KEY/adapter`` is ``align-`` and 12 characters of
    KEY); the requests then ask for it, and a server without it stops the run before any
    request with the command that serves it. Set by the pipeline after training; a user may
    also set it to sample a base model with an adapter."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key; unset: the placeholder ``EMPTY`` is sent (a
    server started without ``--api-key`` ignores it)."""
    concurrency: int = 8
    """Requests in flight at once (the server batches them)."""
    timeout: float = 120.0
    """Seconds to wait for one request's answer."""
    max_retries: int = 2
    """Times a request is tried again when the server is busy (429), restarting (5xx) or
    silent past ``timeout``, or the connection drops: the openai client's exponential backoff,
    or the server's Retry-After. 0: one try."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        checks = {
            "base_url": (self.base_url.startswith(("http://", "https://")),
                         f"must be an http:// or https:// address, got {self.base_url!r}"),
            "adapter": (self.adapter is None or bool(self.adapter.strip()),
                        "must be an adapter folder or served name (or null)"),
            "api_key_env": (bool(self.api_key_env.strip()),
                            "must name an environment variable"),
            "concurrency": (1 <= self.concurrency <= 4096,
                            f"must lie in [1, 4096], got {self.concurrency}"),
            "timeout": (0 < self.timeout <= 86400,
                        f"must lie in (0, 86400] seconds, got {self.timeout}"),
            "max_retries": (0 <= self.max_retries <= 100,
                            f"must lie in [0, 100], got {self.max_retries}"),
        }
        for key, (ok, why) in checks.items():
            if not ok:
                raise InputError(why, field=key)


@SAMPLERS.register("openai")
class OpenAISampler(Sampler):
    """Samples from an OpenAI-compatible server: one chat completion request per prompt."""

    Options = OpenAIOptions
    loads_adapters = True  # a LoRA module the server serves, asked for by its name
    reads_local_weights = False  # the model is the server's, known here by its name
    options: OpenAIOptions

    def __init__(self, model: str | os.PathLike[str] | None = None,
                 options: OpenAIOptions | None = None) -> None:
        """``model``: the name the server serves (None: the first it lists). Nothing is sent
        until the first ``generate``: the server may start later."""
        super().__init__(model, options)
        if self.model_name is not None and not self.model_name.strip():
            raise InputError("must be a model name (or left out for the server's first model)",
                             field="generator.model")
        self.model: str | None = self.model_name
        self.last_stats: dict[str, float] = {}
        self._checked = False
        self._openai: Any = None

    def generate(self, prompts: list[Messages], params: SamplingParams) -> list[list[str]]:
        from calm_rag.runtime.progress import progress_bar

        model = self._served_model()
        results: list[list[str]] = [[] for _ in prompts]
        started, new_tokens, requests = time.perf_counter(), 0, 0
        bar = progress_bar("sampling", len(prompts), unit="prompt",
                           enabled=self.options.progress)
        pool = ThreadPoolExecutor(max_workers=self.options.concurrency,
                                  thread_name_prefix="calm-rag-openai")
        try:
            futures = {pool.submit(self._sample, model, chat, params): i
                       for i, chat in enumerate(prompts)}
            for future in as_completed(futures):
                texts, tokens, asked = future.result()
                results[futures[future]] = texts
                new_tokens, requests = new_tokens + tokens, requests + asked
                bar.update(1)
                bar.set_postfix(tok_s=f"{new_tokens / (time.perf_counter() - started):.0f}")
        finally:
            # On an error (or ^C) the queued requests are dropped; those in flight end by
            # themselves within the timeout.
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
        seconds = time.perf_counter() - started
        self.last_stats = {"prompts": len(prompts), "sequences": len(prompts) * params.n,
                           "requests": requests, "new_tokens": new_tokens, "seconds": seconds,
                           "tokens_per_s": new_tokens / seconds if seconds else 0.0}
        log.info("sampled %d prompts x %d from %s in %.1f s (%d requests, %d new tokens)",
                 len(prompts), params.n, self.options.base_url, seconds, requests, new_tokens)
        return results

    def _sample(self, model: str, chat: Messages, params: SamplingParams
                ) -> tuple[list[str], int, int]:
        """``n`` texts for one chat, the tokens they took and the requests it needed.

        A server may return fewer choices than asked (llama.cpp's ignores ``n``): the rest is
        asked for again, with a new seed so that the texts differ.
        """
        wanted = 1 if params.greedy else params.n  # greedy copies are identical: ask for one
        texts: list[str] = []
        tokens = rounds = 0
        while len(texts) < wanted:
            reply = self._request("/chat/completions", {
                "model": model, "messages": chat, "n": wanted - len(texts),
                "temperature": params.temperature,
                "top_p": 1.0 if params.greedy else params.top_p,
                "max_tokens": params.max_tokens,
                "seed": _prompt_seed(params.seed, chat, rounds), **_extra_body(params),
            })
            choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
            if not choices:
                raise RuntimeError(f"the server at {self.options.base_url} answered with no "
                                   f"choices: {json.dumps(reply)[:300]}")
            texts += [(c.get("message") or {}).get("content") or "" for c in choices]
            tokens += int((reply.get("usage") or {}).get("completion_tokens") or 0)
            rounds += 1
        texts = texts[:wanted]
        return (texts * params.n if params.greedy else texts), tokens, rounds

    def _served_model(self) -> str:
        """The model to ask for, checked against the server's list (once per sampler): the
        adapter's served name when there is an adapter."""
        if self._checked:
            return self.model  # type: ignore[return-value]
        cards = [m for m in self._request("/models").get("data") or [] if isinstance(m, dict)]
        served = [str(m.get("id")) for m in cards]
        if self.options.adapter is not None:
            self.model = self._served_adapter(cards)
        elif self.model is None:
            if not served:
                raise InputError(f"the server at {self.options.base_url} lists no models",
                                 field="generator.model", hint="set generator.model")
            self.model = served[0]
            log.info("the server at %s serves %s", self.options.base_url, ", ".join(served))
        elif served and self.model not in served:
            raise InputError(f"the server at {self.options.base_url} does not serve "
                             f"{self.model!r}", field="generator.model",
                             hint=f"it serves {', '.join(map(str, served))}")
        self._checked = True
        return str(self.model)

    def _served_adapter(self, cards: list[dict[str, Any]]) -> str:
        """The served name of ``options.adapter``: a listed model whose id is its name, or
        whose root (vLLM lists a LoRA module's path there) is its folder; else how to serve
        it, in one line."""
        adapter = self.options.adapter
        assert adapter is not None
        folder = Path(adapter)
        name = adapter_served_name(adapter) if folder.is_dir() else adapter
        for card in cards:
            root = card.get("root")
            same_folder = (folder.is_dir() and isinstance(root, str)
                           and os.path.realpath(root) == os.path.realpath(folder))
            if card.get("id") in (name, adapter) or same_folder:
                log.info("the server at %s serves the adapter %s as %s",
                         self.options.base_url, adapter, card["id"])
                return str(card["id"])
        bases = [str(c.get("id")) for c in cards if not c.get("parent")]
        base = self.model_name or (bases[0] if bases else "BASE_MODEL")
        path = os.path.abspath(adapter) if folder.is_dir() else "ADAPTER_FOLDER"
        rank = _adapter_rank(adapter) if folder.is_dir() else None
        # vLLM refuses an adapter above --max-lora-rank (16 by default).
        ranks = f" --max-lora-rank {_served_rank(rank)}" if rank and rank > 16 else ""
        raise InputError(f"the server at {self.options.base_url} does not serve the adapter "
                         f"{adapter}", field="generator.options.adapter",
                         hint=f"serve it with `vllm serve {base} --enable-lora --lora-modules "
                              f"{name}={path}{ranks}` (or set align.merge: true)")

    def _client(self) -> Any:
        """The openai client, made on first use and shared by the request threads."""
        if self._openai is None:
            import openai

            self._openai = openai.OpenAI(
                base_url=self.options.base_url, timeout=self.options.timeout,
                api_key=os.environ.get(self.options.api_key_env) or NO_KEY,
                max_retries=self.options.max_retries)
        return self._openai

    def _request(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The server's JSON for ``/models`` (no body) or ``/chat/completions``; its failures,
        once the client's retries are spent, become InputErrors."""
        import openai

        url = self.options.base_url.rstrip("/") + path
        client = self._client()
        try:
            if body is None:
                return {"data": [card.to_dict() for card in client.models.list()]}
            extra = {key: value for key, value in body.items() if key not in CLIENT_KEYS}
            return client.chat.completions.create(
                **{key: value for key, value in body.items() if key in CLIENT_KEYS},
                extra_body=extra or None).to_dict()
        except openai.APITimeoutError:
            raise InputError(f"no answer from {url} within {self.options.timeout:g} s "
                             f"({self._tries()})", field="generator.options.timeout",
                             hint="raise generator.options.timeout or lower "
                                  "generator.options.concurrency") from None
        except openai.APIConnectionError as err:
            reason = err.__cause__ or err
            raise InputError(f"cannot reach the server at {url} ({self._tries()}): {reason}",
                             field="generator.options.base_url", hint=START_HINT) from None
        except openai.APIStatusError as err:
            raise self._http_error(url, err) from None
        except (openai.APIResponseValidationError, json.JSONDecodeError):
            raise InputError(f"{url} answered with something other than JSON",
                             field="generator.options.base_url",
                             hint="is it an OpenAI-compatible API? The address ends in /v1"
                             ) from None

    def _tries(self) -> str:
        tries = 1 + self.options.max_retries
        return f"{tries} tr{'ies' if tries > 1 else 'y'}"

    def _http_error(self, url: str, err: Any) -> InputError:
        """The server's own message (``err``: the client's APIStatusError), and the config key
        it points at when it says which."""
        raw = err.response.text
        detail = err.body
        if isinstance(detail, dict) and isinstance(detail.get("error"), dict):
            detail = detail["error"]  # the client hands on the body whole or its "error"
        detail = detail if isinstance(detail, dict) else {}
        message = (detail.get("message") or detail.get("detail") or raw.strip()[:300]
                   or err.response.reason_phrase)
        param = detail.get("param")  # any JSON value: only a known name maps to a config key
        field = PARAM_FIELDS.get(param) if isinstance(param, str) else None
        code = err.status_code
        hints = {401: f"set the API key in ${self.options.api_key_env}",
                 404: "check generator.options.base_url (it ends in /v1) and generator.model",
                 429: "the server is busy: raise generator.options.max_retries or lower "
                      "generator.options.concurrency"}
        return InputError(f"the server at {url} answered HTTP {code}: {message}",
                          field=field or "generator.options.base_url",
                          hint=hints.get(code, START_HINT if code >= 500 else None))


def _extra_body(params: SamplingParams) -> dict[str, Any]:
    """The request keys beyond OpenAI's core ones, only when set: a server that does not know
    them (top_k, min_p and chat_template_kwargs are vLLM's and SGLang's) is asked nothing new
    unless the config asks."""
    extra: dict[str, Any] = {"stop": list(params.stop), "top_k": params.top_k,
                             "min_p": params.min_p,
                             "chat_template_kwargs": params.chat_template_kwargs}
    return {key: value for key, value in extra.items() if value}


def adapter_served_name(folder: str) -> str:
    """The name to serve an adapter folder under: the pipeline's ``.../align/KEY/adapter`` is
    ``align-KEY`` (12 characters of the key), another folder its own name."""
    path = Path(os.path.abspath(folder))
    if path.name == "adapter" and path.parent.parent.name:
        name = f"{path.parent.parent.name}-{path.parent.name[:12]}"
    else:
        name = path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "adapter"


def _adapter_rank(folder: str) -> int | None:
    from calm_rag.models.loading import adapter_config

    rank = adapter_config(folder, field="generator.options.adapter").get("r")
    return rank if isinstance(rank, int) else None


def _served_rank(rank: int) -> int:
    """The smallest rank vLLM's --max-lora-rank takes that holds ``rank``."""
    from calm_rag.sampling.vllm_lora import LORA_RANKS

    return next((r for r in LORA_RANKS if r >= rank), rank)


def _prompt_seed(seed: int, chat: Messages, round_: int) -> int:
    """A seed from the call's seed, the chat and the request round: a prompt's texts depend on
    nothing else, and prompts of a call draw independent streams."""
    text = json.dumps([seed, round_, chat], ensure_ascii=False, sort_keys=True)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little")
