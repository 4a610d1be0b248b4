"""Hub reachability asked through huggingface_hub (its offline mode, its HTTP session and so the
proxies a download would use), and traditional vs simplified Chinese told by CC-CEDICT's
character sets (hanzidentifier)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import huggingface_hub
import huggingface_hub.constants
import pytest

from calm_rag.models.references import hub_reachable
from calm_rag.retrieval.language_id import detect_language, written_in


class FakeProxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy that records each request line: a plain HTTP request is answered 200
    (the hub is there), a CONNECT tunnel for HTTPS is refused with 502 (the hub is not)."""

    seen: list[str] = []

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append(self.requestline)
        self.send_response(200)
        self.end_headers()

    def do_CONNECT(self) -> None:  # noqa: N802
        self.seen.append(self.requestline)
        self.send_response(502)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy(monkeypatch) -> Iterator[str]:
    """A local proxy in every proxy variable, online mode, and a fresh huggingface_hub session
    (a session reads the proxies when it is made), closed again afterwards."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_PROXY", "no_proxy",
                 "http_proxy", "https_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("HTTPS_PROXY", url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    FakeProxy.seen = []
    huggingface_hub.close_session()
    yield url
    huggingface_hub.close_session()
    server.shutdown()
    server.server_close()


def test_the_hub_is_reached_through_the_proxy(proxy, monkeypatch):
    """A hub name no resolver knows is reachable through the proxy: the request went there
    (a direct connection would have failed on the name)."""
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.calm-rag.invalid")
    assert hub_reachable(timeout=5) is True
    assert FakeProxy.seen == ["HEAD http://hub.calm-rag.invalid/ HTTP/1.1"]


def test_https_proxy_is_asked_and_its_refusal_means_unreachable(proxy, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.calm-rag.invalid")
    assert hub_reachable(timeout=5) is False
    assert FakeProxy.seen == ["CONNECT hub.calm-rag.invalid:443 HTTP/1.1"]


@pytest.mark.parametrize("how", ["environment", "constant"])
def test_offline_mode_asks_nobody(proxy, monkeypatch, how):
    """HF_HUB_OFFLINE in the environment now, or huggingface_hub's constant (read at import,
    or set by calm_rag when the network is gone): unreachable, and no request is made."""
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.calm-rag.invalid")
    if how == "environment":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert hub_reachable(timeout=5) is False
    assert FakeProxy.seen == []


@pytest.mark.parametrize("text, code", [
    # Plain sentences with none of the old table's ~150 characters.
    ("我今天很高興。", "zh-hant"),
    ("我今天很高兴。", "zh"),
    ("請問你叫什麼名字？", "zh-hant"),
    ("请问你叫什么名字？", "zh"),
    ("他們在學校裡讀書", "zh-hant"),
    ("他们在学校里读书", "zh"),
    ("一位35歲女性因發燒就診。", "zh-hant"),
    ("一位35岁女性因发烧就诊。", "zh"),
    # Traditional with one simplified character (来): the majority decides.
    ("這個病人說他来自台灣。", "zh-hant"),
    ("答案是 B", "zh"),  # no character of either script alone
])
def test_traditional_and_simplified_sentences(text, code):
    assert detect_language(text) == code


def test_a_plain_traditional_sentence_is_not_simplified():
    assert written_in("我今天很高興。", "zh-hant") is True
    assert written_in("我今天很高興。", "zh") is False
    assert written_in("我今天很高兴。", "zh") is True
