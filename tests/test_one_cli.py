"""One CLI: shared flags anywhere, one name per flag, every config error of a file at once."""

from __future__ import annotations

import argparse
import logging

import pytest

from calm_rag.cli import build_parser, main


def every_parser(parser: argparse.ArgumentParser, prog: str = "calm-rag"):
    """``(prog, parser)`` for the parser and each of its subcommands, nested ones included."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from every_parser(child, f"{prog} {name}")


PARSERS = list(every_parser(build_parser()))


@pytest.mark.parametrize(("prog", "parser"), PARSERS, ids=[prog for prog, _ in PARSERS])
def test_every_command_takes_verbose_and_renders_its_help_cleanly(prog, parser):
    text = parser.format_help()
    assert "-v, --verbose" in text
    assert "%%" not in text  # only %-formatted help strings need %% (rendered as %)
    fallback = [a for a in parser._actions if a.dest == "chosen_fallback"]
    if fallback:  # no choice the command then refuses: sampling again needs `calm-rag run`
        assert sorted(fallback[0].choices) == ["pivot", "skip"]
    assert "--out-dir" not in text and "--preset" not in text  # old names, hidden


@pytest.mark.parametrize("argv", [["-v", "run", "x.yaml"], ["run", "x.yaml", "-v"],
                                  ["run", "--verbose", "x.yaml"],
                                  ["index", "-v", "build", "s.yaml"],
                                  ["study", "votes", "s.jsonl", "-v"],
                                  ["cache", "prune", "--verbose"]])
def test_verbose_before_or_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).verbose is True


@pytest.mark.parametrize("argv", [["run", "x.yaml"], ["index", "build", "s.yaml"],
                                  ["study", "votes", "s.jsonl"]])
def test_not_verbose_unless_asked(argv):
    assert build_parser().parse_args(argv).verbose is False


def test_verbose_after_the_subcommand_sets_info_logging(tmp_path, capsys):
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        root.handlers.clear()  # basicConfig only configures a logger without handlers
        assert main(["index", "list", "--index-dir", str(tmp_path), "-v"]) == 0
        assert root.level == logging.INFO
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert capsys.readouterr().out == f"no index specs or built indexes in {tmp_path}\n"


def test_index_dir_is_the_one_name_and_out_dir_still_works():
    parser = build_parser()
    for flag in ("--index-dir", "--out-dir"):
        assert parser.parse_args(["index", "build", "s.yaml", flag, "here"]).index_dir.name \
            == "here"
    for action in ("query", "info", "verify", "list"):
        argv = ["index", action, *(["n"] if action != "list" else []),
                *(["text"] if action == "query" else []), "--index-dir", "there"]
        assert parser.parse_args(argv).index_dir.name == "there"


def test_policy_names_the_preset_in_vote_study_and_metrics():
    parser = build_parser()
    assert parser.parse_args(["vote", "s", "--out", "o", "--policy", "calm"]).policy == "calm"
    assert parser.parse_args(["metrics", "s", "--policy", "calm"]).policy == "calm"
    for flag in ("--policy", "--preset"):  # --preset: study's old name
        assert parser.parse_args(["study", "votes", "s", flag, "calm"]).preset == "calm"
    assert parser.parse_args(["study", "votes", "s"]).preset == "default"
