"""``calm-rag study votes``: every vote policy against gold, by number of languages voting."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from calm_rag.commands.common import (
    add_extractor_option,
    add_group_option,
    load_samples,
    policy_chain,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from calm_rag.registries import TIE_POLICIES, VOTE_PRESETS
    from calm_rag.vote.voting import offline_fallbacks

    study = subparsers.add_parser("study", help="studies of the method on sample sets",
                                  description="Studies of the method on sample sets.")
    kinds = study.add_subparsers(dest="study", metavar="STUDY", required=True)
    p = kinds.add_parser(
        "votes", help="every vote policy against gold, by number of languages",
        description="Run every vote policy on SAMPLES (with gold answers) on all languages "
                    "and on every subset of 2, 3, ... languages (averaged per size): target "
                    "accuracy, coverage, ties, pairs and clean pairs. Prints a markdown "
                    "table; with --out, writes votes_study.md, .json and .png there.")
    p.add_argument("samples", type=Path, metavar="SAMPLES",
                   help="a samples JSONL, a CALM sample file, or a folder of CALM sample files")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder")
    p.add_argument("--policy", dest="preset", default="default", choices=list(VOTE_PRESETS),
                   help="preset vote policy the policies studied share, as `calm-rag vote "
                        "--policy`; 'calm' reads and votes as CALM does (default: "
                        "%(default)s)")
    p.add_argument("--preset", dest="preset", choices=list(VOTE_PRESETS),
                   help=argparse.SUPPRESS)  # the old name of --policy, still read
    p.add_argument("--tie", choices=list(TIE_POLICIES), help="how ties are settled")
    p.add_argument("--min-agreement", type=float, metavar="SHARE",
                   help="abstain when the winner holds less than this share of the votes")
    p.add_argument("--chosen-fallback", choices=offline_fallbacks(),
                   help="when a language has no agreeing response: skip it, or borrow one "
                        "(the fallbacks that sample again need `calm-rag run`)")
    p.add_argument("--weights", metavar="xx=W,yy=W",
                   help="per-language weights; the 'weighted' policy runs only with them")
    p.add_argument("--min-languages", type=int, default=2, metavar="N",
                   help="smallest language subset studied (default: %(default)s)")
    add_extractor_option(p)
    add_group_option(p)
    p.set_defaults(func=run)


def base_config(args: argparse.Namespace):
    from calm_rag.errors import InputError
    from calm_rag.vote.voting import preset

    chosen = {key: value for key, value in {
        "tie": args.tie, "min_agreement": args.min_agreement,
        "chosen_fallback": args.chosen_fallback}.items() if value is not None}
    try:
        return dataclasses.replace(preset(args.preset), **chosen)
    except InputError as err:  # name the flag that set it
        flag = f"--{err.field.replace('_', '-')}" if err.field in chosen else err.field
        raise InputError(err.message, field=flag, hint=err.hint) from None


def run(args: argparse.Namespace) -> int:
    from calm_rag.commands.vote import parse_weights
    from calm_rag.errors import InputError
    from calm_rag.evaluation.study import (
        format_study_table,
        plot_study,
        study_policies,
    )
    from calm_rag.io import atomic_write, output_folder, refuse_inputs, write_json

    if args.min_languages < 1:
        raise InputError("must be at least 1", field="--min-languages")
    weights = parse_weights(args.weights) if args.weights else None
    base = base_config(args)
    try:
        policies = study_policies(base, weights)
    except InputError as err:  # only the weights are new to the base configuration
        raise InputError(err.message, field="--weights", hint=err.hint) from None
    if args.out:
        refuse_inputs(args.out, [args.samples])  # before the work, not after it
    started = time.perf_counter()
    samples = load_samples(args.samples, args.extractors, policy_chain(args.preset), args.group)
    study = study_with_progress(samples, policies, args.min_languages)
    table = format_study_table(study)
    print(f"{study['questions']} questions, languages {', '.join(study['languages'])}, "
          f"{time.perf_counter() - started:.1f} s\n")
    print(table)
    if args.out:
        with output_folder(args.out, inputs=[args.samples]) as folder:
            write_json(folder.path("votes_study.json"), study)
            with atomic_write(folder.path("votes_study.md")) as handle:
                handle.write(table + "\n")
            plot_study(study, folder.path("votes_study.png"))
        print(f"\nwrote votes_study.md, votes_study.json and votes_study.png to {args.out}")
    return 0


def study_with_progress(samples: list, policies: dict, min_languages: int) -> dict:
    """``vote_study`` one policy at a time, so that a long study shows its progress (a bar
    on a terminal, one line in a log)."""
    from calm_rag.evaluation.study import vote_study
    from calm_rag.runtime.progress import progress_bar

    study: dict = {}
    with progress_bar("studying vote policies", len(policies), unit="policy") as bar:
        for name, config in policies.items():
            one = vote_study(samples, {name: config}, min_languages)
            study = {**one, "policies": {**study.get("policies", {}), **one["policies"]}}
            bar.update(1)
    return study
