"""The demo: the embedded default model answers the bundled questions in six languages,
zero-shot and with retrieval; the answers vote across languages; pairs and metrics follow.

It is what ``make demo`` runs until the full loop (training, before/after evaluation) lands as
``calm-rag run pipelines/demo.yaml``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from calm_rag.datasets.bundled import BUNDLED_LANGUAGES, load_bundled
from calm_rag.records import Question, Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of the demo run."""

    dataset: str = field(default="medical", metadata={"help": "bundled set: medical|commonsense"})
    languages: tuple[str, ...] = field(default=BUNDLED_LANGUAGES,
                                       metadata={"help": "languages asked"})
    questions: int = field(default=8, metadata={"help": "questions taken (each in every language)"})
    n: int = field(default=3, metadata={"help": "responses sampled per question and language"})
    max_tokens: int = field(default=96, metadata={"help": "new tokens per response"})
    model: str = field(default="smollm2-135m-instruct",
                       metadata={"help": "generator: a default's name, a folder or a hub name"})
    retrieval: bool = field(default=True, metadata={"help": "also run the RAG setting"})
    k: int = field(default=2, metadata={"help": "passages per question with retrieval"})
    index_dir: str = field(default="indexes", metadata={"help": "where indexes are built"})

    @property
    def index_name(self) -> str:
        return f"{self.dataset}-demo"


def pick_questions(config: DemoConfig) -> list[Question]:
    """The first ``config.questions`` ids of the bundled set, in every chosen language."""
    questions = load_bundled(config.dataset, config.languages)
    ids = list(dict.fromkeys(q.id for q in questions))[: config.questions]
    keep = set(ids)
    return [q for q in questions if q.id in keep]


def passages_for_questions(config: DemoConfig, questions: list[Question]):
    """A function giving each question its top-k passages, building the index if missing.

    Retrieval fuses the question's own language with its English version: multilingual-e5
    ranks same-language passages first, and half the bundled facts live in English.
    """
    from calm_rag.retrieval import Retriever, build_index, load_spec, question_query

    spec = Path(config.index_dir) / f"{config.index_name}.yaml"
    build_index(load_spec(spec), config.index_dir)  # leaves an up-to-date index alone
    retriever = Retriever.open(config.index_name, index_dir=config.index_dir)
    english = {q.id: question_query(q) for q in questions if q.lang == "en"}

    def passages_for(question: Question) -> list[str]:
        hits = retriever.retrieve(question_query(question), k=config.k, policy="fused",
                                  pivot_query=english.get(question.id))
        return [hit.chunk.text for hit in hits]

    return passages_for


def sample_demo(config: DemoConfig) -> list[Sample]:
    """Zero-shot samples, then RAG samples when retrieval is on."""
    from calm_rag.sampling import SamplingParams, make_sampler, sample_questions

    questions = pick_questions(config)
    sampler = make_sampler("hf", {"model": config.model})
    params = SamplingParams(n=config.n, max_tokens=config.max_tokens)
    log.warning("sampling %d prompts x n=%d zero-shot", len(questions), config.n)
    samples = sample_questions(questions, sampler, params, "zero-shot")
    if config.retrieval:
        passages_for = passages_for_questions(config, questions)
        log.warning("sampling %d prompts x n=%d with retrieval", len(questions), config.n)
        samples += sample_questions(questions, sampler, params, "rag", passages_for)
    return samples


def run_demo(config: DemoConfig, out: str | Path) -> dict:
    """Sample, vote, pair, export and measure; write everything under ``out`` at once."""
    from calm_rag.datasets import export_llamafactory, export_trl, write_samples
    from calm_rag.evaluation import compute_metrics, format_metrics_table
    from calm_rag.io import atomic_dir, write_json, write_jsonl
    from calm_rag.pairs import build_pairs
    from calm_rag.voting import VoteConfig, vote_all

    samples = sample_demo(config)
    vote_config = VoteConfig()
    votes = vote_all(samples, vote_config)
    pairs = build_pairs(samples, votes, vote_config)
    metrics = compute_metrics(samples)
    table = format_metrics_table(metrics)
    with atomic_dir(out) as staging:
        write_json(staging / "config.json", {"demo": asdict(config), "vote": asdict(vote_config)})
        write_samples(staging / "samples.jsonl", samples)
        write_jsonl(staging / "votes.jsonl", (v.to_dict() for v in votes))
        write_jsonl(staging / "pairs.jsonl", (p.to_dict() for p in pairs))
        export_trl(pairs, staging / "dpo_trl.jsonl")
        export_llamafactory(pairs, staging / "llamafactory")
        write_json(staging / "metrics.json", metrics)
        (staging / "report.md").write_text(f"# calm_rag demo\n\n{table}\n", encoding="utf-8")
    return {"samples": len(samples), "votes": len(votes), "pairs": len(pairs), "table": table}
