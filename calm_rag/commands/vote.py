"""``calm-rag vote``: votes, preference pairs and a summary from samples."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
from pathlib import Path

from calm_rag.commands.common import add_extractor_option, add_group_option, load_samples


def register(subparsers: argparse._SubParsersAction) -> None:
    from calm_rag.registries import TIE_POLICIES, VOTE_POLICIES, VOTE_PRESETS
    from calm_rag.vote.voting import UNPARSED, offline_fallbacks

    p = subparsers.add_parser(
        "vote", help="vote across languages and build preference pairs",
        description="Vote across languages on each question and write votes.jsonl, "
                    "pairs.jsonl, samples.jsonl (with answers) and summary.json to --out.")
    p.add_argument("samples", type=Path, metavar="SAMPLES",
                   help="a samples JSONL, a CALM sample file, or a folder of CALM sample files")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--policy", default="default", choices=list(VOTE_PRESETS),
                   help="preset vote policy; 'calm' reproduces the authors' pairs (default: "
                        "%(default)s); the options below override it")
    p.add_argument("--vote-policy", choices=list(VOTE_POLICIES),
                   help="who votes: pooled answers (CALM), one vote per language "
                        "(language-balanced), weighted languages, or dawid-skene")
    p.add_argument("--weights", metavar="xx=W,yy=W",
                   help="per-language weights for --vote-policy weighted (unlisted: 1)")
    p.add_argument("--tie", choices=list(TIE_POLICIES), help="how ties are settled")
    p.add_argument("--language-order", metavar="xx,yy", help="order for first-seen ties")
    p.add_argument("--pivot", metavar="xx", help="pivot language")
    p.add_argument("--min-agreement", type=float, metavar="SHARE",
                   help="abstain when the majority holds less than this share of answers")
    p.add_argument("--chosen-fallback", choices=offline_fallbacks(),
                   help="when a language has no agreeing response: skip it, or borrow one "
                        "(the fallbacks that sample again need `calm-rag run`)")
    p.add_argument("--unparsed", choices=UNPARSED, help="responses with no answer: ignore/reject")
    p.add_argument("--max-pairs-per-question", type=int, metavar="N", help="cap rows per question")
    p.add_argument("--json", action="store_true",
                   help="print the whole summary (summary.json) instead of its short form")
    add_extractor_option(p)
    add_group_option(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from calm_rag.errors import InputError
    from calm_rag.vote.voting import preset

    overrides = {
        "policy": args.vote_policy,
        "options": {"weights": parse_weights(args.weights)} if args.weights else None,
        "tie": args.tie,
        "language_order": tuple(args.language_order.split(",")) if args.language_order else None,
        "pivot": args.pivot,
        "min_agreement": args.min_agreement,
        "chosen_fallback": args.chosen_fallback,
        "unparsed": args.unparsed,
        "max_pairs_per_question": args.max_pairs_per_question,
    }
    chosen = {key: value for key, value in overrides.items() if value is not None}
    try:
        return dataclasses.replace(preset(args.policy), **chosen)
    except InputError as err:  # name the flag that set it
        top = (err.field or "").split(".")[0]
        flag = FLAGS.get(top, f"--{top.replace('_', '-')}") if top in chosen else err.field
        raise InputError(err.message, field=flag, hint=err.hint) from None


# Fields whose flag is not their name (``--weights`` sets the policy's options).
FLAGS = {"policy": "--vote-policy", "options": "--weights"}


def parse_weights(text: str) -> dict[str, float]:
    """``en=2,zh=0.5`` as a mapping; a malformed item is an InputError on ``--weights``."""
    from calm_rag.errors import InputError

    weights: dict[str, float] = {}
    for item in text.split(","):
        lang, _, value = item.partition("=")
        try:
            weights[lang.strip()] = float(value)
        except ValueError:
            raise InputError(f"{item!r} is not LANG=NUMBER", field="--weights",
                             hint="for example --weights en=2,zh=0.5") from None
    return weights


def run(args: argparse.Namespace) -> int:
    from calm_rag.io import output_folder, refuse_inputs, write_json, write_jsonl
    from calm_rag.registries import EXTRACTOR_CHAINS
    from calm_rag.vote.pairs import build_pairs
    from calm_rag.vote.voting import tally

    config = config_from_args(args)
    refuse_inputs(args.out, [args.samples])  # before the work, not after it
    # A preset reads answers with the extractor chain of its name where there is one: CALM's
    # pairs rest on the authors' own letter reading, quirks included (see answers.py).
    default_chain = (EXTRACTOR_CHAINS.get(args.policy) if args.policy in EXTRACTOR_CHAINS
                     else None)
    samples = load_samples(args.samples, args.extractors, default_chain, args.group)
    counted = tally(samples, config)
    votes = counted.votes
    pairs = build_pairs(samples, votes, config)
    summary = summarize(samples, votes, pairs, config, counted.weights)
    with output_folder(args.out, inputs=[args.samples]) as folder:
        write_jsonl(folder.path("samples.jsonl"), (s.to_dict() for s in samples))
        write_jsonl(folder.path("votes.jsonl"), (v.to_dict() for v in votes))
        write_jsonl(folder.path("pairs.jsonl"), (p.to_dict() for p in pairs))
        write_json(folder.path("summary.json"), summary)
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print("\n".join(summary_lines(summary)))
    print(f"wrote {len(votes)} votes and {len(pairs)} pairs to {args.out}")
    return 0


def summary_lines(summary: dict) -> list[str]:
    """The summary in a few lines (questions and how they were voted, pairs by language,
    where chosen came from, how answers were read); summary.json and ``--json`` hold it all."""
    def counts(mapping: dict) -> str:
        return ", ".join(f"{key} {value}" for key, value in mapping.items()) or "none"

    lines = [f"{summary['questions']} questions, {summary['samples']} samples: votes "
             f"{counts(summary['votes'])}; {summary['ties']} tied ({summary['ties_dropped']} "
             f"dropped), {summary['abstained']} abstained",
             f"pairs: {summary['pairs']} ({counts(summary['pairs_per_language'])}); chosen "
             f"from {counts(summary['chosen_source'])}",
             f"answers read by: {counts(summary['extraction'])}"]
    weights = summary["language_weights"]
    if weights:  # per setting, or per language: shown as summary.json has them
        lines.append(f"language weights: {json.dumps(weights, ensure_ascii=False)}")
    return lines


def summarize(samples, votes, pairs, config, weights=None) -> dict:
    """Counts a person checks first: statuses, ties, pairs per language, where chosen came
    from, and the weight the policy gave each language (per setting)."""
    from calm_rag.evaluation.votes import vote_counts

    return {
        "config": dataclasses.asdict(config),
        "samples": len(samples),
        "questions": len({s.question.id for s in samples}),
        "votes": dict(Counter(v.status for v in votes)),
        **vote_counts(votes),
        "language_weights": {k: v for k, v in (weights or {}).items() if v is not None},
        "pairs": len(pairs),
        "pairs_per_language": dict(sorted(Counter(p.lang for p in pairs).items())),
        "chosen_source": dict(Counter(p.chosen_source for p in pairs)),
        "extraction": dict(Counter(s.extraction for s in samples)),
    }
