"""BM25: stop words per language, saved and memory-mapped, scored sparsely like bm25s."""

from __future__ import annotations

import numpy as np

from calm_rag.retrieval.lexical import LexicalIndex, stopwords, tokenize

DOCS = [
    ("The patient may die of sepsis without antibiotics.", "en"),
    ("Die Niere filtert das Blut und bildet den Urin.", "de"),
    ("The heart pumps the blood into the aorta.", "en"),
    ("Le foie produit la bile et transforme les médicaments.", "fr"),
    ("Sepsis is the body's extreme response to an infection.", "en"),
    ("高血压的治疗包括生活方式的改变。", "zh"),
    ("The die was cast: the kidney transplant went ahead.", "en"),
]


def test_stop_words_are_those_of_the_texts_language():
    # "die" is a German stop word, not an English one.
    assert "die" in stopwords("de") and "die" not in stopwords("en")
    assert tokenize("Will the patient die?", "en") == ["patient", "die"]
    assert "die" not in tokenize("Die Niere filtert das Blut", "de")
    assert "the" in tokenize("the", "de")  # another language's stop word stays
    detected = tokenize("Without treatment the patient will die of the infection", None)
    assert "die" in detected and "patient" in detected and "the" not in detected
    assert stopwords("ja") == frozenset()  # no list: every word is kept


def test_an_english_query_finds_die_in_english_chunks():
    index = LexicalIndex.build(DOCS)
    rows = [row for row, _ in index.search("Can a patient die of sepsis?", 5, lang="en")]
    assert rows[0] == 0  # "die" and "sepsis" both count
    # The German chunk dropped its "die" as a stop word when it was indexed.
    assert 1 not in [row for row, _ in index.search("die", 7, lang="en")]


def test_saved_index_is_memory_mapped_and_scores_as_bm25s(tmp_path):
    built = LexicalIndex.build(DOCS)
    names = built.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    loaded = LexicalIndex.load(tmp_path)
    assert isinstance(loaded._bm25.scores["data"], np.memmap)
    for query in ["sepsis blood", "kidney heart blood aorta", "高血压", "die die kidney"]:
        tokens = tokenize(query, "en")
        dense = built._bm25.get_scores(tokens)  # bm25s's own pass over every document
        order = sorted((row for row in range(len(DOCS)) if dense[row] > 0),
                       key=lambda row: (-dense[row], row))
        found = loaded.search(query, len(DOCS), lang="en")
        assert [row for row, _ in found] == order
        np.testing.assert_allclose([s for _, s in found], dense[order], rtol=1e-5)
    allowed = np.array([row != 0 for row in range(len(DOCS))])
    assert [r for r, _ in loaded.search("sepsis", 5, allowed, lang="en")] == [4]
