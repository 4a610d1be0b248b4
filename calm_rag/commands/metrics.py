"""``calm-rag metrics``: accuracy, extraction and cross-lingual agreement of samples."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from calm_rag.commands.common import add_extractor_option, add_group_option, load_samples
from calm_rag.errors import InputError
from calm_rag.records import Sample


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "metrics", help="accuracy per language and cross-lingual consistency",
        description="Accuracy per language against gold, extraction rates, CALM's "
                    "cross-lingual consistency, Krippendorff's alpha (languages as raters), "
                    "answer entropy across languages and RankC (from option scores), with "
                    "bootstrap 95% intervals.")
    p.add_argument("samples", type=Path, metavar="SAMPLES", nargs="?",
                   help="a samples JSONL, a CALM sample file, or a folder of CALM sample files")
    p.add_argument("--policy", choices=("default", "calm"), default="default",
                   help="calm: read answers as CALM does; with --predictions, CALM's own "
                        "consistency, computed as the authors' utils/get_consistency_score.py "
                        "does, quirks included (our accuracy and consistency beside)")
    p.add_argument("--predictions", nargs="+", metavar="LANG=FILE|FOLDER",
                   help="with --policy calm: each language's LLaMA-Factory "
                        "generated_predictions.jsonl as LANG=FILE (cn or zh, ...), or one "
                        "folder with a subfolder per language code")
    p.add_argument("--calm-variant", choices=("medqa", "xcsqa"), default=None,
                   help="with --predictions: the script's MedQA (options A-D, backticks "
                        "removed) or X-CSQA (A-E) function; default medqa for en, cn, fr and "
                        "xcsqa for all six; with --paper-table, by the questions' options")
    p.add_argument("--paper-table", action="store_true",
                   help="the table CALM's paper reports: accuracy per language and "
                        "consistency (CALM's script's and ours), before and after, from "
                        "SAMPLES: CALM's released sample files (before only) or a run folder "
                        "(each eval/<split>-<phase>.jsonl)")
    p.add_argument("--option-scores", type=Path, metavar="FILE",
                   help="a run's option_scores.jsonl, for RankC (found by itself for a run's "
                        "eval/<split>-<phase>.jsonl)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_extractor_option(p)
    add_group_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calm_rag.evaluation import compute_metrics, format_metrics_table
    from calm_rag.evaluation.agreement import RANKC_NEEDS, rankc
    from calm_rag.registries import EXTRACTOR_CHAINS

    if args.predictions:
        return run_calm_predictions(args)
    if args.paper_table:
        return run_paper_table(args)
    if args.samples is None:
        raise InputError("give SAMPLES, or --policy calm --predictions LANG=FILE ...",
                         field="SAMPLES")
    chain = EXTRACTOR_CHAINS.get(args.policy, field="--policy")  # default, or CALM's reading
    samples = load_samples(args.samples, args.extractors, chain, group=args.group)
    metrics = compute_metrics(samples)
    scores = option_scores(args.samples, args.option_scores, samples)
    for setting, m in metrics.items():
        if scores is not None:
            m["rankc"] = rankc(scores.get(setting, {}), m["languages"])
    print(json.dumps(metrics, indent=2) if args.json else format_metrics_table(metrics))
    if scores is None and not args.json:
        print(f"\n{RANKC_NEEDS}.")
    return 0


def run_calm_predictions(args: argparse.Namespace) -> int:
    """``--policy calm --predictions``: CALM's consistency of prediction files, ours beside."""
    from calm_rag.evaluation import format_metrics_table
    from calm_rag.evaluation.calm_consistency import (
        calm_consistency,
        default_variant,
        format_calm_consistency,
        prediction_files,
    )

    if args.policy != "calm":
        raise InputError("prediction files are read the way CALM's script reads them",
                         field="--predictions", hint="add --policy calm")
    if args.samples is not None:
        raise InputError("--predictions replaces SAMPLES: give one or the other",
                         field="SAMPLES")
    files = prediction_files(args.predictions)
    variant = args.calm_variant or default_variant(list(files))
    chain = tuple(args.extractors.split(",")) if args.extractors else None
    result = calm_consistency(files, variant, chain)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_calm_consistency(result))
        if result.ours is not None:
            print()
            print(format_metrics_table({"ours, on the same files": result.ours}))
    return 0


def run_paper_table(args: argparse.Namespace) -> int:
    """``--paper-table``: the paper's table of a run folder or of CALM's released samples."""
    from calm_rag.evaluation.calm_consistency import paper_rows, paper_sources
    from calm_rag.evaluation.tables import format_paper_table
    from calm_rag.registries import EXTRACTOR_CHAINS

    if args.samples is None:
        raise InputError("give SAMPLES: CALM's sample files or a run folder",
                         field="SAMPLES")
    chain = EXTRACTOR_CHAINS.get(args.policy, field="--policy")
    sources = [(label, load_samples(path, args.extractors, chain,
                                    group=args.group if path == args.samples else None))
               for label, path in paper_sources(args.samples)]
    rows = paper_rows(sources, args.calm_variant)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False))
        return 0
    print(f"The paper's table of {args.samples}: accuracy and consistency in %, 95% "
          f"bootstrap intervals over questions; CALM's consistency by the {rows[0].variant} "
          "variant of its utils/get_consistency_score.py (the mean over the k-th samples of "
          "every language where there are several)\n")
    print(format_paper_table(rows))
    if not any(label.endswith("after") for label, _ in sources):
        print(f"\nafter: no samples of an aligned model in {args.samples} (before only)")
    return 0


def option_scores(samples_path: Path, given: Path | None, samples: list[Sample]
                  ) -> dict[str, dict] | None:
    """Setting → question → language → option scores for SAMPLES: from ``given``, or from
    the ``option_scores.jsonl`` of the run SAMPLES is an evaluation file of; None without.
    The scores must be those of ``samples``: every sampled question in every language, each
    with its options (see :func:`~calm_rag.evaluation.agreement.check_option_scores`)."""
    from calm_rag.evaluation.agreement import check_option_scores, score_targets, scores_by_cell
    from calm_rag.io import read_jsonl

    path = given
    if path is None and samples_path.parent.name == "eval":
        found = samples_path.parent.parent / "option_scores.jsonl"
        path = found if found.is_file() else None
    if path is None:
        return None
    rows = [(line, _score_row(row, path, line)) for line, row in read_jsonl(path)]
    cell = _cell_of(samples_path, path, list(dict.fromkeys(row["cell"] for _, row in rows)))
    chosen = [(line, row) for line, row in rows if row["cell"] == cell]
    checked = check_option_scores(chosen, score_targets(samples), path)
    return scores_by_cell(checked)[cell]


def _cell_of(samples: Path, path: Path, cells: list[str]) -> str:
    """The cell of the scores file that SAMPLES are the samples of: its only one, or the one
    named after a run's eval/<split>-<phase>.jsonl."""
    if len(cells) == 1:
        return cells[0]
    cell = samples.stem.replace("-", "/", 1)  # eval/heldout-before.jsonl: heldout/before
    if cell not in cells:
        raise InputError(f"holds the cells {', '.join(cells)}, none named after "
                         f"{samples.name}", path=path, field="--option-scores",
                         hint="pass a run's eval/<split>-<phase>.jsonl as SAMPLES")
    return cell


def _score_row(row: dict, path: Path, line: int) -> dict:
    """A row of ``option_scores.jsonl``, its keys and types checked (errors name the line)."""
    from calm_rag.io.read import expect, expect_map

    for key in ("cell", "question_id", "lang", "setting"):
        expect(row, key, str, path, line)
    expect_map(row, "scores", float, path, line)
    return row
