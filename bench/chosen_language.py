"""The report's "Chosen responses in the prompt's language" on a run's first-round samples
without the pair cap: `pivot` against `regenerate`, per prompt language.

The run's own samples are voted again with its config (the votes must equal its votes.jsonl);
every question's pairs are built with `vote.max_pairs_per_question` lifted, once with
`chosen_fallback: pivot` and once with `regenerate` (`regenerate_otherwise: pivot`, so that
both count the same pair rows). `regenerate` samples the languages with no agreeing response
again, given the target, on the model that sampled the run (its fingerprint must be the
manifest's), with the run's sampling settings and `vote.regenerate_tries` responses each.

    python bench/chosen_language.py                     # the latest run of runs/demo
    python bench/chosen_language.py runs/demo/20261206-223556 --no-write
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from results_header import REPO, header, load_average, write_results

OUT = REPO / "bench" / "results" / "chosen-language.md"
COMMAND = "python bench/chosen_language.py"


def first_round(run_path: Path) -> tuple:
    """The run, its experiment, its first-round samples and the votes its config gives them
    (refused unless they are the run's own votes: a config that no longer reads the samples
    the same way would count other pairs)."""
    from calm_rag.errors import InputError
    from calm_rag.runs import open_run
    from calm_rag.vote.voting import tally

    run = open_run(run_path)
    experiment = run.config
    samples = run.samples(1)
    votes = tally(samples, experiment.vote).votes
    kept = [(v.question_id, v.setting, v.answer) for v in run.votes(1)]
    if [(v.question_id, v.setting, v.answer) for v in votes] != kept:
        raise InputError("the run's config does not vote its samples as its votes.jsonl says",
                         path=run.path, hint="was the run made by another version?")
    return run, experiment, samples, votes


def base_model(run, experiment):
    """The model that sampled the first round, refused if it is not the one the run used."""
    from calm_rag.errors import InputError
    from calm_rag.pipeline.model_ref import ModelRef

    generator = experiment.generator
    model = ModelRef.resolve(generator.model, generator.backend, adapter=generator.adapter)
    used = run.manifest.get("models", {}).get("base_fingerprint")
    if model.fingerprint != used:
        raise InputError(f"the generator here ({model.fingerprint}) is not the one that "
                         f"sampled the run ({used})", path=run.path / "manifest.json",
                         hint="regenerate on the run's own model, or run the experiment again")
    return model


def regenerated(experiment, model, samples, votes, config) -> tuple[list, int, float]:
    """The responses sampled again for ``config`` (regenerate), the languages asked and the
    seconds it took (engine start included)."""
    from calm_rag.pipeline.model_ref import LazySampler
    from calm_rag.pipeline.stages.regenerate import regenerate, requests_for
    from calm_rag.registries import EXTRACTOR_CHAINS

    requests = requests_for(samples, votes, config)
    params = dataclasses.replace(experiment.sampling, n=config.regenerate_tries)
    chain = EXTRACTOR_CHAINS.get(experiment.answers.chain, field="answers.chain")
    started = time.perf_counter()
    with LazySampler(experiment.generator, model) as sampler:
        kept = regenerate(requests, sampler.get(), params, chain) if requests else []
    return kept, len(requests), time.perf_counter() - started


def share(count: int, total: int) -> str:
    return f"{count} ({100 * count / total:.1f}%)"


def table(pivot: dict[str, dict], regen: dict[str, dict]) -> list[str]:
    """README's table: per language, the pairs, the chosen texts in the prompt's language
    under each fallback, and the rows whose chosen text was regenerated."""
    rows = [[lang, pivot[lang]["pairs"], pivot[lang]["in_language"],
             regen[lang]["in_language"], regen[lang]["sources"]["regenerated"]]
            for lang in pivot]
    rows.append(["all", *(sum(row[i] for row in rows) for i in range(1, 5))])
    lines = ["| language | pairs | `pivot`: chosen in the prompt's language | `regenerate` "
             "| regenerated rows |", "|---|---|---|---|---|"]
    lines += [f"| {lang} | {pairs} | {share(p, pairs)} | {share(r, pairs)} | {again} |"
              for lang, pairs, p, r, again in rows]
    return lines


def counts(run, experiment, samples, votes) -> tuple[list[str], list[str]]:
    """The table and the lines saying what it was computed from."""
    from calm_rag.errors import InputError
    from calm_rag.evaluation.chosen_language import chosen_language
    from calm_rag.pipeline.run_folder import precision
    from calm_rag.vote.pairs import build_pairs

    uncapped = dataclasses.replace(experiment.vote, max_pairs_per_question=None)
    pivot = dataclasses.replace(uncapped, chosen_fallback="pivot")
    regen = dataclasses.replace(uncapped, chosen_fallback="regenerate",
                                regenerate_otherwise="pivot")
    model = base_model(run, experiment)
    kept, asked, seconds = regenerated(experiment, model, samples, votes, regen)
    by_pivot = chosen_language(build_pairs(samples, votes, pivot))
    by_regen = chosen_language(build_pairs(samples, votes, regen, kept))
    if {k: v["pairs"] for k, v in by_pivot.items()} != {k: v["pairs"] for k, v in
                                                         by_regen.items()}:
        raise InputError("pivot and regenerate counted different pair rows", path=run.path)
    made = precision(experiment)
    about = [f"Run: `{run.name}/{run.path.name}` (made at commit "
             f"{run.manifest.get('git', {}).get('commit', 'unknown')}), its first round's "
             f"{len(samples)} samples and {len(votes)} votes; generator "
             f"{experiment.generator.model} on {experiment.generator.backend} in "
             f"{made['generator']} ({made['reason']}). `regenerate`: {asked} languages of a "
             f"question asked again, {experiment.vote.regenerate_tries} responses each, "
             f"{len(kept)} kept, in {seconds:.0f} s (engine start included)."]
    return table(by_pivot, by_regen), about


def latest_demo() -> Path:
    from calm_rag.runs import latest_run

    return latest_run("demo", REPO / "runs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="a run folder (default: the latest "
                        "run of runs/demo)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    started_load = load_average()
    run, experiment, samples, votes = first_round(args.run or latest_demo())
    lines, about = counts(run, experiment, samples, votes)
    text = [*header("Chosen responses in the prompt's language, without the pair cap",
                    COMMAND + (f" {args.run}" if args.run else ""), started_load),
            *about, "",
            "Per prompt language: the pair rows of every voted question (no "
            "`max_pairs_per_question`), and those whose `chosen` text the language identifier "
            "(py3langid; the script for CJK) finds in the prompt's language, with "
            "`chosen_fallback: pivot` and with `regenerate` (`regenerate_otherwise: pivot`); "
            "regenerated rows: pairs whose chosen text was sampled again.", "", *lines]
    if args.no_write:
        print("\n".join(text))
    else:
        write_results(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
