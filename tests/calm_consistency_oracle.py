"""The oracle for tests/test_calm_consistency.py: CALM's consistency score, ported.

What the authors' ``utils/get_consistency_score.py`` (github.com/wangym2/CALM, commit 9d2bac4)
computes, in its own terms: ``get_ans_key`` splits each prediction on its language's marker and
takes the first character of the last piece, stripped; ``get_multilingual_consistency_medqa``
(en, cn, fr; options A-D; backticks removed first) and ``get_multilingual_consistency_csqa``
(en, cn, fr, de, ja, it; options A-E) drop answers outside the options with a ``for``/``remove``
loop over the list they iterate, and average the share of equal pairs over the rows, up to the
shortest file. Written independently of calm_rag (no import from it), so the differential test
compares two separate readings of the same script.

Where the script would fail, the issue's rule stands in: ``strip()[0]`` of an empty piece (a
prediction with nothing after its marker) raises IndexError, read here as ``""``, an answer
outside the options; the X-CSQA variant divides by zero when fewer than two answers are left,
read here as the MedQA variant's 0.
"""

from __future__ import annotations

import json

# get_ans_key: one literal marker per language, the authors' codes (cn, not zh).
MARKERS = {"en": "Answer:", "de": "Antwort:", "fr": "Réponse:", "it": "Risposta:",
           "cn": "答案:", "ja": "答え:"}
MEDQA_LANGS = ("en", "cn", "fr")  # get_multilingual_consistency_medqa's arguments, in order
CSQA_LANGS = ("en", "cn", "fr", "de", "ja", "it")  # ..._csqa's, in order


def read_file(path: str) -> list[dict]:
    """The script's reader: one JSON object a line (blank lines, which it cannot read, left out)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def get_ans_key(pred: str, lang: str) -> str:
    """The first character after the language's marker; ``""`` where the script crashes."""
    piece = pred.split(MARKERS[lang])[-1].strip()
    if not piece:
        return ""  # IndexError in the script: counted as an answer outside the options
    return piece[0]


def row_score(key_list: list[str], option_list: list[str]) -> float:
    """One row's share of equal pairs, after the script's removal loop."""
    # The script's loop, verbatim: it removes from the list it iterates over.
    for key in key_list:
        if key not in option_list:
            key_list.remove(key)
    count = 0
    for j in range(len(key_list)):
        for k in range(j + 1, len(key_list)):
            if key_list[j] == key_list[k]:
                count += 1
    if len(key_list) > 1:
        return count / (len(key_list) * (len(key_list) - 1) / 2)
    return 0  # the MedQA variant's rule (the X-CSQA variant divides by zero here)


def consistency(files: dict[str, str], variant: str) -> float:
    """The script's final consistency for ``{cn|en|...: path}``; ``variant``: medqa or csqa.

    The script's functions take exactly their languages, in the order of their arguments;
    other sets of them (the differential test runs 2 to 6) keep that order, en, cn, fr, de,
    ja, it, of which the MedQA variant's en, cn, fr is the start."""
    if variant == "medqa":
        option_list, backticks = ["A", "B", "C", "D"], True
    else:
        option_list, backticks = ["A", "B", "C", "D", "E"], False
    langs = [lang for lang in CSQA_LANGS if lang in files]
    data = {lang: read_file(files[lang]) for lang in langs}
    consistency_list = []
    for i in range(min(len(data[lang]) for lang in langs)):
        key_list = []
        for lang in langs:
            pred = data[lang][i]["predict"]
            if backticks:
                pred = pred.replace("`", "")
            key_list.append(get_ans_key(pred, lang))
        consistency_list.append(row_score(key_list, option_list))
    return sum(consistency_list) / len(consistency_list)
