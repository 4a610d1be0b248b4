"""`calm-rag vote --policy calm` then `export --format llamafactory` rebuild CALM's released
X-CSQA pairs for cn, fr, de, it and ja: the same rejected texts, each with the same chosen
answer letter (CALM's chosen texts were machine-translated, so only their letter can match)."""

from __future__ import annotations

import json
from collections import Counter

from calm_rag.cli import main
from calm_rag.datasets.calm import parse_calm_input
from calm_rag.vote.answers import CALM_CHAIN, extract_answer

TARGET_LANGUAGES = ("cn", "fr", "de", "it", "ja")


def released_rows(path, lang):
    """(stem, rejected text, chosen letter) of each row in one of CALM's DPO files."""
    rows = Counter()
    for row in json.loads(path.read_text(encoding="utf-8")):
        stem, options = parse_calm_input(row["input"])
        # Released chosen texts often end in an echoed empty "Antwort:" slot, which the
        # standard chain steps over; CALM's own reading covers the rest.
        letter = (extract_answer(row["chosen"], lang, options).answer
                  or extract_answer(row["chosen"], lang, options, CALM_CHAIN).answer)
        rows[stem, row["rejected"], letter] += 1
    return rows


def our_rows(path):
    rows = Counter()
    for row in json.loads(path.read_text(encoding="utf-8")):
        stem, _ = parse_calm_input(row["input"])
        rows[stem, row["rejected"], row["chosen_answer"]] += 1
    return rows


def test_vote_and_export_rebuild_the_released_pairs(calm_reference, tmp_path, capsys):
    voted, exported = tmp_path / "voted", tmp_path / "lf"
    assert main(["vote", str(calm_reference / "samples"), "--policy", "calm",
                 "--out", str(voted)]) == 0
    assert main(["export", str(voted), "--format", "llamafactory", "--calm-names",
                 "--out", str(exported)]) == 0
    capsys.readouterr()
    # chosen_answer is not a LLaMA-Factory column; read it from pairs.jsonl beside the export.
    pairs = [json.loads(x) for x in (voted / "pairs.jsonl").read_text().splitlines()]
    total = 0
    for lang in TARGET_LANGUAGES:
        ours_file = exported / f"DPO_{lang}.json"
        ours = json.loads(ours_file.read_text(encoding="utf-8"))
        code = "zh" if lang == "cn" else lang
        letters = [p["chosen_answer"] for p in pairs if p["lang"] == code]
        assert len(letters) == len(ours)
        for row, letter in zip(ours, letters, strict=True):
            row["chosen_answer"] = letter
        ours_file.write_text(json.dumps(ours, ensure_ascii=False))
        expected = released_rows(calm_reference / "train" / "dpo" / f"DPO_{lang}.json", lang)
        got = our_rows(ours_file)
        missing, extra = sum((expected - got).values()), sum((got - expected).values())
        assert got == expected, (lang, missing, extra)
        total += sum(got.values())
    assert total == 3876
    info = json.loads((exported / "dataset_info.json").read_text())
    assert info["DPO_cn"]["ranking"] is True
