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


# ---------------------------------------------------------------- config errors, all at once

KNOWN_TOP = ("name, plugins, data, generator, sampling, answers, retrieval, vote, align, "
             "evaluation, shard_questions, runs_dir")


def test_every_bad_value_of_a_file_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "x.yaml"
    path.write_text("name: x\nruns_dri: out\ndata:\n  languages: [en, 3, true]\n"
                    "  train: many\n", encoding="utf-8")
    assert main(["run", str(path), "--check"]) == 2
    said = f"calm-rag run: error: {path}"
    assert capsys.readouterr().err.splitlines() == [
        f"{said}:2: field 'runs_dri': unknown key (did you mean runs_dir? known keys: "
        f"{KNOWN_TOP})",
        f"{said}:4: field 'data.languages[1]': expected str, got int",
        f"{said}:4: field 'data.languages[2]': expected str, got bool",
        f"{said}:5: field 'data.train': expected int, got str",
    ]


def test_a_set_error_follows_the_files_and_one_error_stays_one(tmp_path):
    from calm_rag.errors import InputError, InputErrors
    from calm_rag.experiment import load_experiment

    path = tmp_path / "x.yaml"
    path.write_text("name: x\nretrieval:\n  k: three\n", encoding="utf-8")
    with pytest.raises(InputErrors) as found:
        load_experiment(path, ["sampling.n=x"])
    assert [(err.path, err.line, err.field) for err in found.value.errors] == [
        (str(path), 3, "retrieval.k"), ("--set sampling.n=x", None, "sampling.n")]
    assert found.value.field == "retrieval.k"  # an InputError: the first one's place
    with pytest.raises(InputError) as one:
        load_experiment(path)
    assert type(one.value) is InputError
    assert str(one.value) == f"{path}:3: field 'retrieval.k': expected int, got str"


def test_at_most_20_errors_shown(tmp_path):
    from calm_rag.errors import InputErrors
    from calm_rag.experiment import load_experiment

    path = tmp_path / "x.yaml"
    path.write_text("name: x\ndata:\n" + "".join(f"  k{i}: 1\n" for i in range(25)),
                    encoding="utf-8")
    with pytest.raises(InputErrors) as found:
        load_experiment(path)
    lines = str(found.value).splitlines()
    assert len(found.value.errors) == 25 and len(lines) == 21
    assert lines[0].startswith(f"{path}:3: field 'data.k0': unknown key (known keys: source,")
    assert lines[19].startswith(f"{path}:22: field 'data.k19': unknown key")
    assert lines[20] == "5 more errors not shown (fix these 20 first)"


@pytest.mark.parametrize(("text", "field", "hint"), [
    ("retrieval:\n  hybird: true\n", "retrieval.hybird", "did you mean hybrid? known keys:"),
    ("align:\n  lora:\n    rank: 8\n", "align.lora.rank", "known keys: r, alpha,"),
    ("align:\n  lora:\n    alpah: 8\n", "align.lora.alpah", "did you mean alpha? known keys: r"),
    ("sampling:\n  temprature: 0.5\n", "sampling.temprature", "did you mean temperature?"),
])
def test_did_you_mean_at_every_level(tmp_path, text, field, hint):
    from calm_rag.errors import InputError
    from calm_rag.experiment import load_experiment

    path = tmp_path / "x.yaml"
    path.write_text("name: x\n" + text, encoding="utf-8")
    with pytest.raises(InputError) as found:
        load_experiment(path)
    assert found.value.field == field
    assert found.value.hint.startswith(hint)


# ---------------------------------------------------------------- short texts, no language

@pytest.mark.parametrize(("text", "code"), [
    ("Risposta: B", "und"),  # py3langid: Afrikaans
    ("aspirin dose", "und"),  # py3langid: Kurdish
    ("Answer: B", "und"),  # py3langid: German
    ("12345 -- 678", "und"),
    ("答案: C", "zh"),  # CJK is told by its script, however short
    ("La risposta è B.", "it"),  # three words and more: the identifier's
    ("The answer is B", "en"),
])
def test_texts_too_short_are_not_identified(text, code):
    from calm_rag.retrieval.language_id import detect_language

    assert detect_language(text) == code


def test_a_text_too_short_to_identify_is_in_no_language():
    from calm_rag.retrieval.language_id import written_in

    assert [written_in("Risposta: B", code) for code in ("it", "en", "af")] == [False] * 3
    assert written_in("La risposta è B.", "it") is True


# ---------------------------------------------------------------- locks: filelock

def test_the_cache_and_exclusive_lock_hold_filelocks(tmp_path):
    from filelock import FileLock, Timeout

    from calm_rag.io import exclusive_lock
    from calm_rag.pipeline.cache import StageCache

    cache = StageCache(tmp_path / "cache")
    with cache.claim("sample", "k"):  # a run computing the key: prune leaves it
        assert cache.remove("sample", "k") is False
    assert cache.remove("sample", "k") is True
    with FileLock(tmp_path / "cache" / "sample" / ".k.lock"):  # another holder of the key
        assert cache.remove("sample", "k") is False
    path = tmp_path / "once.lock"
    with exclusive_lock(path):
        with pytest.raises(Timeout):
            FileLock(path).acquire(timeout=0)
    with FileLock(path).acquire(timeout=0):
        pass
