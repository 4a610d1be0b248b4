"""Hostile-input probe (issue 16): malformed inputs and misuses of every ``calm-rag`` command.

Generates cases by family x variant (bad encodings, bad JSON, wrong field types, file-system
traps, path traversal, bad experiment and index-spec YAML, hand-edited manifests, CLI misuse),
runs each as ``python -m calm_rag.cli ...`` in a fresh temp folder and records how it ended.

    python bench/hostile_probe.py                      # every case, a markdown table
    python bench/hostile_probe.py --only config --json rows.json

Verdict (issue 16's promise): ``OK`` iff the exit code is 0 or 2, no traceback, a one-line error
when it is 2, no user file lost or changed, and it ended within its timeout. Otherwise the first
that applies of TIMEOUT, LOST, TRACEBACK, BAD-EXIT, MULTILINE (``SKIP`` when a case cannot be set
up, e.g. ``chmod 000`` does not stop root). Flags add what the verdict cannot see: ``accepted``
(an input that must be refused was taken: exit 0, or a run got past every check to the
deliberate stop), ``escaped`` (a new file outside the folder the command may write) and
``leftover`` (a failed command left files behind).

Never a model: experiments that would sample ask for more questions than exist (the *stop*,
reached only after every load-time check), cases that load an embedder use the small one that
ships in a package, the hub is offline, and a case past its timeout is killed with its group.
Exit code 0 always: this measures, it does not judge.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import hostile_cases as hc  # noqa: E402

TIMEOUT = 20.0
HEAVY_TIMEOUT = 90.0  # cases that import torch and load the small embedder or a model
MEMORY_LIMIT = 4 << 30  # address space of a light case: a bomb must not take the machine
STOP = 54321  # data.train of a run that must stop after loading (more than any bundled set)
STOP_MARK = "5432"  # ... as it shows in the stop's message (train + heldout)
SPEC_STOP = "POISON-missing.jsonl"  # the missing corpus that stops a build before embedding
# Progress a command prints on stderr before its error (the run's log lines: its settings, the
# data's protocol, each round): not part of the error message.
PROGRESS = re.compile(r"^(experiment .*: settings |data: |round \d+: |evaluating )|\[\d\d:\d\d")
Setup = Callable[[Path], list[str]]


@dataclass
class Case:
    family: str
    name: str
    setup: Setup
    """Writes the case's files into the work folder (the cwd) and returns the CLI arguments;
    returning None means the case cannot be set up here (SKIP)."""
    heavy: bool = False
    expect_reject: bool | None = None
    """True: the input is invalid, so exit 0 (or reaching the run's stop) is flagged."""
    stop: str | None = None
    """Text in the last line that says the command got past every check to its stop."""
    writes: tuple[str, ...] | None = None
    """Folders (relative to the cwd) where new files may appear; None: not checked."""
    env: dict[str, str] = field(default_factory=dict)
    key: str | None = None
    """The config key the case breaks: its error must name it (with the file's line)."""
    names: str | None = None
    """Text the error must hold where the key has no line to name (a JSON manifest, a check
    made while the run runs): ``misnamed`` when it does not."""


@dataclass
class Row:
    family: str
    case: str
    exit: int | None
    seconds: float
    verdict: str
    last_line: str
    traceback: bool = False
    multiline: bool = False
    lost: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    escaped: list[str] = field(default_factory=list)
    new_files: list[str] = field(default_factory=list)


# --- running one case ----------------------------------------------------------------------

def case_env(tmp: Path, case: Case) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALM_RAG_", "HF_"))}
    env.update(PYTHONPATH=str(ROOT), CALM_RAG_HOME=str(tmp / "calm_home"),
               HF_HOME=str(tmp / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", NO_PROXY="*")
    work = tmp / "home" / "user" / "work"
    env.update({key: value.replace("{work}", str(work)) for key, value in case.env.items()})
    return env


def snapshot(top: Path) -> dict[str, str | None]:
    """Every regular file under ``top``: its SHA-256 (None when root-less reads fail)."""
    files: dict[str, str | None] = {}
    for folder, _, names in os.walk(top):
        for name in names:
            path = Path(folder, name)
            if path.is_symlink() or not path.is_file():
                continue
            try:
                files[str(path.relative_to(top))] = _fingerprint(path)
            except OSError:
                files[str(path.relative_to(top))] = None
    return files


def _fingerprint(path: Path) -> str:
    """SHA-256 of the bytes; for LLaMA-Factory's ``dataset_info.json``, which export merges
    into, the user's entries as JSON (they must survive, the file may gain ours)."""
    data = path.read_bytes()
    if path.name == "dataset_info.json":
        try:
            entries = json.loads(data)
        except ValueError:  # not JSON: judged by its bytes
            entries = None
        if isinstance(entries, dict):
            return "entries:" + json.dumps(entries, sort_keys=True)
    return hashlib.sha256(data).hexdigest()


def _kept(before: str | None, after: str | None) -> bool:
    """Whether a user file survived: the same bytes, or every dataset_info entry unchanged."""
    if before is not None and after is not None and before.startswith("entries:"):
        if not after.startswith("entries:"):
            return False
        old, new = json.loads(before[8:]), json.loads(after[8:])
        return all(new.get(key) == value for key, value in old.items())
    return before == after


def execute(argv: list[str], cwd: Path, env: dict[str, str], case: Case
            ) -> tuple[int | None, str, str, float]:
    """Run the CLI; past the timeout the whole process group is killed (exit None)."""
    limit = None if case.heavy else _limit_memory
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "calm_rag.cli", *argv], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=limit)
    try:
        out, err = proc.communicate(timeout=HEAVY_TIMEOUT if case.heavy else TIMEOUT)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return code, out.decode(errors="replace"), err.decode(errors="replace"), (
        time.perf_counter() - started)


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_case(case: Case) -> Row:
    tmp = Path(tempfile.mkdtemp(prefix="calm-probe-"))
    try:
        work = tmp / "home" / "user" / "work"
        work.mkdir(parents=True)
        try:
            argv = case.setup(work)
        except Exception as err:  # a bug of the probe must not end the measurement
            return Row(case.family, case.name, None, 0.0, "PROBE-ERROR", repr(err))
        if argv is None:
            return Row(case.family, case.name, None, 0.0, "SKIP", "cannot be set up here")
        before = snapshot(tmp)
        code, out, err, seconds = execute(argv, work, case_env(tmp, case), case)
        after = snapshot(tmp)
        return judge(case, code, out, err, seconds, before, after, tmp, work)
    finally:
        _remove(tmp)


def _remove(tmp: Path) -> None:
    for folder, dirs, _ in os.walk(tmp):
        for name in dirs:  # chmod 000 / 555 folders the cases made
            with _quiet():
                os.chmod(Path(folder, name), 0o755)
    shutil.rmtree(tmp, ignore_errors=True)


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)


# --- judging -------------------------------------------------------------------------------

def error_lines(err: str) -> list[str]:
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", err) if ln.strip()]
    return [ln for ln in lines if not PROGRESS.search(ln)]


def judge(case: Case, code: int | None, out: str, err: str, seconds: float,
          before: dict, after: dict, tmp: Path, work: Path) -> Row:
    lines = error_lines(err) or [ln for ln in out.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    row = Row(case.family, case.name, code, round(seconds, 2), "OK", last[:400])
    row.traceback = "Traceback (most recent call last)" in err + out
    row.multiline = code == 2 and len(error_lines(err)) > 1
    row.lost = sorted(name for name, digest in before.items()
                      if name not in after or not _kept(digest, after[name]))
    new = sorted(set(after) - set(before))
    row.flags, row.escaped = _flags(case, code, last, new, tmp, work)
    row.new_files = new[:8]
    row.verdict = _verdict(row, code)
    return row


def _verdict(row: Row, code: int | None) -> str:
    if code is None:
        return "TIMEOUT"
    if row.lost:
        return "LOST"
    if row.traceback:
        return "TRACEBACK"
    if code not in (0, 2):
        return "BAD-EXIT"
    if row.multiline:
        return "MULTILINE"
    return "OK"


def _flags(case: Case, code: int | None, last: str, new: list[str], tmp: Path, work: Path
           ) -> tuple[list[str], list[str]]:
    flags = []
    reached_stop = case.stop is not None and case.stop in last
    if case.expect_reject and (code == 0 or reached_stop):
        flags.append("accepted")
    mine = [n for n in new if not n.startswith(("calm_home", "hf_home"))]
    escaped = []
    if case.writes is not None:
        allowed = [os.path.relpath(os.path.abspath(work / w), tmp) for w in case.writes]
        escaped = [n for n in mine if not any(_under(n, a) for a in allowed)]
    if escaped:
        flags.append("escaped")
    if code not in (0, None) and not reached_stop and mine:
        flags.append("leftover")
    if case.key and code == 2 and not reached_stop:
        flags += _naming_flags(case.key, last)
    if case.names and code == 2 and case.names not in last:
        flags.append("misnamed")
    return flags, escaped


def _naming_flags(key: str, last: str) -> list[str]:
    """``misnamed``: the error does not name the broken key as it is written (``align.beta``,
    not ``align.align.beta``); ``no-line``: it names no line of the YAML file."""
    flags = []
    if f"'{key}'" not in last:
        flags.append("misnamed")
    if not re.search(r"\.ya?ml:\d+", last):
        flags.append("no-line")
    return flags


def _under(name: str, folder: str) -> bool:
    return folder == "." or name == folder or name.startswith(folder.rstrip("/") + "/")


# --- writing case files --------------------------------------------------------------------

def put(work: Path, rel: str, data: str | bytes) -> Path:
    path = work / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(data)
    return path


def user_files(folder: Path) -> None:
    """What a user keeps in a folder (a LLaMA-Factory ``data/`` folder, say): must survive."""
    put(folder, "dataset_info.json", json.dumps({"my_data": {"file_name": "my_data.json"}}))
    put(folder, "my_data.json", json.dumps([{"instruction": "mine", "output": "keep me"}]))
    put(folder, "notes/README.txt", "my notes\n")


def stopped_experiment(**changes: object) -> dict:
    """The base experiment, set to stop before sampling (``data.train`` above any set)."""
    data = hc.experiment()
    data["data"]["train"], data["data"]["heldout"] = STOP, 0
    for key, value in changes.items():
        data = hc.set_yaml_key(data, key, value)
    return data


def stopped_spec() -> dict:
    return hc.spec(SPEC_STOP)


@dataclass(frozen=True)
class Target:
    """A reader reached through the CLI: the file it reads, its valid text, the command."""

    name: str
    file: str
    valid: Callable[[], str]
    argv: tuple[str, ...]
    heavy: bool = False
    extra: Callable[[Path], None] | None = None
    stop: str | None = None
    writes: tuple[str, ...] | None = None


def _calm_neighbour(work: Path) -> None:
    put(work, "calm/x_csqa_en_train_sampled.json", json.dumps(hc.calm_items()))


def _corpus_spec(work: Path) -> None:
    put(work, "spec.yaml", hc.to_yaml(hc.spec("corpus.jsonl")))


def _text_spec(work: Path) -> None:
    data = hc.spec("texts")
    data["corpus"] = [{"type": "text", "path": "texts", "lang": "en"}]
    put(work, "spec.yaml", hc.to_yaml(data))
    put(work, "texts/good.txt", "Doctors work in hospitals.\n")


def _manifest_files(work: Path) -> None:
    for name in ("index.faiss", "chunks.jsonl"):
        put(work, f"indexes/broken/{name}", "0123456789")


def targets() -> list[Target]:
    samples = lambda: hc.jsonl(hc.sample_rows())  # noqa: E731
    pairs = lambda: hc.jsonl(hc.pair_rows())  # noqa: E731
    calm = lambda: json.dumps(hc.calm_items(), indent=1)  # noqa: E731
    mani = lambda: json.dumps(hc.manifest(), indent=1)  # noqa: E731
    out = ("out",)
    return [
        Target("samples/vote", "samples.jsonl", samples, ("vote", "samples.jsonl", "--out",
                                                          "out"), writes=out),
        Target("samples/metrics", "samples.jsonl", samples, ("metrics", "samples.jsonl")),
        Target("calm-file/vote", "calm/x_csqa_en_train_sampled.json", calm,
               ("vote", "calm/x_csqa_en_train_sampled.json", "--out", "out"), writes=out),
        Target("calm-folder/vote", "calm/x_csqa_zh_train_sampled.json", calm,
               ("vote", "calm", "--out", "out"), extra=_calm_neighbour, writes=out),
        Target("pairs/trl", "pairs.jsonl", pairs,
               ("export", "pairs.jsonl", "--format", "trl", "--out", "out"), writes=out),
        Target("pairs/llamafactory", "pairs.jsonl", pairs,
               ("export", "pairs.jsonl", "--format", "llamafactory", "--out", "out"),
               writes=out),
        Target("experiment/run", "exp.yaml", lambda: hc.to_yaml(stopped_experiment()),
               ("run", "exp.yaml"), stop=STOP_MARK, writes=("runs",)),
        Target("spec/build", "spec.yaml", lambda: hc.to_yaml(stopped_spec()),
               ("index", "build", "spec.yaml"), stop=SPEC_STOP, writes=("indexes",)),
        Target("corpus-jsonl/build", "corpus.jsonl", lambda: hc.jsonl(hc.corpus_rows()),
               ("index", "build", "spec.yaml"), heavy=True, extra=_corpus_spec,
               writes=("indexes",)),
        Target("corpus-text/build", "texts/bad.txt", lambda: "Nurses work in clinics.\n",
               ("index", "build", "spec.yaml"), heavy=True, extra=_text_spec,
               writes=("indexes",)),
        Target("manifest/info", "indexes/broken/manifest.json", mani,
               ("index", "info", "broken", "--index-dir", "indexes"), extra=_manifest_files),
        Target("manifest/list", "indexes/broken/manifest.json", mani,
               ("index", "list", "--index-dir", "indexes"), extra=_manifest_files),
        Target("manifest/query", "indexes/broken/manifest.json", mani,
               ("index", "query", "broken", "pain", "--index-dir", "indexes"),
               extra=_manifest_files),
    ]


def target_case(family: str, name: str, target: Target, data: str | bytes,
                expect_reject: bool | None = None) -> Case:
    def setup(work: Path) -> list[str]:
        if target.extra:
            target.extra(work)
        put(work, target.file, data)
        return list(target.argv)

    return Case(family, f"{target.name}: {name}", setup, heavy=target.heavy,
                expect_reject=expect_reject, stop=target.stop, writes=target.writes)


# --- the cases, by family ------------------------------------------------------------------
# Every generator below returns a list of Case; CASE_FAMILIES at the end lists them all.

def encoding_cases() -> list[Case]:
    """Every reader x every way its bytes can fail to be UTF-8 text."""
    cases = []
    for target in targets():
        for name, encode in hc.ENCODINGS.items():
            cases.append(target_case("encoding", name, target, encode(target.valid())))
    return cases


def _json_shapes() -> dict[str, tuple[str, dict, tuple, str, Callable[[str], str]]]:
    """Per JSON target: its valid text, one record, a duplicate key, a text key, a wrapper."""
    samples, pairs, items = hc.sample_rows(), hc.pair_rows(), hc.calm_items()
    valid_samples, valid_pairs = hc.jsonl(samples), hc.jsonl(pairs)
    corpus = hc.corpus_rows()
    return {
        "samples/vote": (valid_samples, samples[0], ("text", "The answer is A."), "text",
                         lambda o: valid_samples + o + "\n"),
        "calm-file/vote": (json.dumps(items), items[0], ("output", "A"), "pred",
                           lambda o: f"[{o},\n{json.dumps(items[1])}]"),
        "pairs/llamafactory": (valid_pairs, pairs[0], ("chosen", "The answer is A."),
                               "chosen", lambda o: valid_pairs + o + "\n"),
        "corpus-jsonl/build": (hc.jsonl(corpus), corpus[0], ("text", "other"), "text",
                               lambda o: o + "\n"),
        "manifest/info": (json.dumps(hc.manifest()), hc.manifest(), ("format", 2), "name",
                          lambda o: o),
        "manifest/list": (json.dumps(hc.manifest()), hc.manifest(), ("format", 2), "name",
                          lambda o: o),
    }


# Structures a reader may take as valid (an unknown huge field); the rest must be refused.
JSON_MAYBE = {"huge-string", "lone-surrogate-escape", "nan-literal", "infinity-literal"}
HEAVY_SKIP = {"huge-string", "deep-objects-in-field", "top-level-string", "top-level-null"}


def json_cases() -> list[Case]:
    by_name = {t.name: t for t in targets()}
    cases = []
    for name, (valid, row, dup, text_key, wrap) in _json_shapes().items():
        target = by_name[name]
        for kind, text in hc.json_structures(valid, row, dup, text_key, wrap).items():
            if target.heavy and kind in HEAVY_SKIP:
                continue  # each heavy case loads an embedder: the main shapes are enough
            # `index list` reports a broken index and goes on: exit 0 is right there.
            expect = None if kind in JSON_MAYBE or name == "manifest/list" else True
            cases.append(target_case("json", kind, target, text, expect))
    return cases


# Containers whose values are free (a mapping of options, a list of responses, ...).
CONTAINERS = {"question", "question.options", "pred", "vote_counts", "extra"}


def _field_expect(path: str, kind: str) -> bool | None:
    """A list or mapping where text belongs, or NaN anywhere, must be refused."""
    if kind == "float-nan":
        return True
    if kind in ("list", "dict") and path not in CONTAINERS:
        return True
    return None


def field_cases() -> list[Case]:
    """Each field of a sample, a pair and a CALM item: wrong types, missing, empty, extra."""
    records = [
        ("samples/vote", hc.sample_rows(), lambda rows: hc.jsonl(rows)),
        ("pairs/llamafactory", hc.pair_rows(), lambda rows: hc.jsonl(rows)),
        ("calm-file/vote", hc.calm_items(), lambda rows: json.dumps(rows, indent=1)),
    ]
    by_name = {t.name: t for t in targets()}
    cases = []
    for name, rows, dump in records:
        for variant, row in hc.field_variants(rows[0]).items():
            path, _, kind = variant.partition("=")
            text = dump([row, *rows[1:]])
            cases.append(target_case("fields", variant, by_name[name], text,
                                     _field_expect(path, kind)))
    return cases


def duplicate_cases() -> list[Case]:
    """Repeated records: votes must not count a sample twice, nor pairs a row twice."""
    by_name = {t.name: t for t in targets()}
    samples, pairs, corpus = hc.sample_rows(), hc.pair_rows(), hc.corpus_rows()
    same_pair = {**pairs[0], "rejected": pairs[0]["chosen"], "rejected_answer": "C"}
    empty_preds = [{**item, "pred": ["", ""]} for item in hc.calm_items()]
    variants = [
        ("samples/vote", "duplicate-sample-rows", hc.jsonl(samples + samples)),
        ("samples/metrics", "duplicate-sample-rows", hc.jsonl(samples + samples)),
        ("samples/vote", "duplicate-sample-id", hc.jsonl(samples + [samples[0]])),
        ("pairs/trl", "duplicate-pair-rows", hc.jsonl(pairs + pairs)),
        ("pairs/llamafactory", "chosen-equals-rejected", hc.jsonl([same_pair])),
        ("calm-file/vote", "all-responses-empty", json.dumps(empty_preds)),
        ("corpus-jsonl/build", "duplicate-doc-id", hc.jsonl(corpus + corpus[:1])),
    ]
    return [target_case("duplicates", kind, by_name[name], text, True)
            for name, kind, text in variants]


# --- file-system traps ---------------------------------------------------------------------

def _valid_inputs(work: Path) -> None:
    put(work, "samples.jsonl", hc.jsonl(hc.sample_rows()))
    put(work, "pairs.jsonl", hc.jsonl(hc.pair_rows()))
    put(work, "exp.yaml", hc.to_yaml(stopped_experiment()))
    put(work, "spec.yaml", hc.to_yaml(stopped_spec()))
    put(work, "notes.txt", "the user's notes\n")


# The commands that read one input path, and the valid file each reads.
READERS: dict[str, tuple[Callable[[str], list[str]], str]] = {
    "vote": (lambda p: ["vote", p, "--out", "out"], "samples.jsonl"),
    "metrics": (lambda p: ["metrics", p], "samples.jsonl"),
    "export": (lambda p: ["export", p, "--format", "trl", "--out", "out"], "pairs.jsonl"),
    "run": (lambda p: ["run", p], "exp.yaml"),
    "index build": (lambda p: ["index", "build", p], "spec.yaml"),
    "index info": (lambda p: ["index", "info", p], "spec.yaml"),
}


def _unreadable(work: Path, valid: str) -> str | None:
    path = work / valid
    path.chmod(0)
    try:
        path.read_bytes()
    except PermissionError:
        return valid
    return None  # root reads it anyway: the case cannot be set up here


def _input_paths() -> dict[str, Callable[[Path, str], str | None]]:
    """Ways the input path itself is wrong; each returns the path to pass (None: SKIP)."""
    def made(fn: Callable[[Path], object], name: str) -> Callable[[Path, str], str]:
        return lambda work, valid: (fn(work), name)[1]

    return {
        "missing": lambda work, valid: "nope.jsonl",
        "empty-dir": made(lambda w: (w / "adir").mkdir(), "adir"),
        "dir-with-junk": made(lambda w: put(w, "adir/junk.bin", b"\x00\x01"), "adir"),
        "unreadable": _unreadable,
        "symlink-loop": made(lambda w: os.symlink("loop", w / "loop"), "loop"),
        "dangling-symlink": made(lambda w: os.symlink("gone", w / "link.yaml"), "link.yaml"),
        "name-too-long": lambda work, valid: "x" * 300 + ".jsonl",
        "empty-path": lambda work, valid: "",
        "dev-null": lambda work, valid: "/dev/null",
        "under-a-file": lambda work, valid: "notes.txt/inner.jsonl",
    }


def input_path_cases() -> list[Case]:
    cases = []
    for command, (argv, valid) in READERS.items():
        for kind, make_path in _input_paths().items():
            def setup(work: Path, argv=argv, valid=valid, make_path=make_path):
                _valid_inputs(work)
                path = make_path(work, valid)
                return None if path is None else argv(path)

            cases.append(Case("files", f"{command}: input {kind}", setup))
    return cases


# The commands that write a folder: the input each reads, and its arguments for ``--out DIR``.
WRITERS: dict[str, tuple[str, Callable[[str], list[str]]]] = {
    "vote": ("data/samples.jsonl", lambda out: ["vote", "data/samples.jsonl", "--out", out]),
    "export trl": ("data/pairs.jsonl", lambda out: ["export", "data/pairs.jsonl", "--format",
                                                    "trl", "--out", out]),
    "export llamafactory": ("data/pairs.jsonl", lambda out: [
        "export", "data/pairs.jsonl", "--format", "llamafactory", "--out", out]),
}


def _read_only(work: Path, given: str) -> str | None:
    (work / "locked").mkdir()
    (work / "locked").chmod(0o555)
    try:
        (work / "locked" / "probe").touch()
    except PermissionError:
        return "locked/out"
    return None  # root writes anyway


OUTPUTS: dict[str, Callable[[Path, str], str | None]] = {
    "out-is-the-input": lambda work, given: given,
    "out-is-the-input-folder": lambda work, given: "data",
    "out-is-dot": lambda work, given: ".",
    "out-is-parent": lambda work, given: "..",
    "out-is-a-user-file": lambda work, given: "notes.txt",
    "out-holds-user-files": lambda work, given: (user_files(work / "lf_data"), "lf_data")[1],
    "out-under-a-file": lambda work, given: "notes.txt/sub",
    "out-unwritable-proc": lambda work, given: "/proc/calm-rag-probe/out",
    "out-read-only-dir": _read_only,
    "out-empty-string": lambda work, given: "",
}


def output_cases() -> list[Case]:
    cases = []
    for command, (given, argv) in WRITERS.items():
        for kind, make_out in OUTPUTS.items():
            def setup(work: Path, given=given, argv=argv, make_out=make_out):
                put(work, "data/samples.jsonl", hc.jsonl(hc.sample_rows()))
                put(work, "data/pairs.jsonl", hc.jsonl(hc.pair_rows()))
                put(work, "notes.txt", "the user's notes\n")
                out = make_out(work, given)
                return None if out is None else argv(out)

            cases.append(Case("files", f"{command}: {kind}", setup))
    return cases + build_output_cases() + runs_dir_cases()


def build_output_cases() -> list[Case]:
    """``index build --out-dir`` into places holding user files (a real build: heavy)."""
    cases = []
    for kind, out in (("out-dir-is-dot", "."), ("out-dir-holds-user-files", "lf_data"),
                      ("out-dir-is-a-user-file", "notes.txt")):
        def setup(work: Path, out=out):
            _corpus_spec(work)
            put(work, "corpus.jsonl", hc.jsonl(hc.corpus_rows()))
            put(work, "notes.txt", "the user's notes\n")
            user_files(work / "lf_data")
            return ["index", "build", "spec.yaml", "--out-dir", out]

        cases.append(Case("files", f"index build: {kind}", setup, heavy=True))
    return cases


def runs_dir_cases() -> list[Case]:
    cases = []
    for kind, runs in (("runs-dir-is-a-file", "notes.txt"), ("runs-dir-unwritable",
                                                              "/proc/calm-rag-probe")):
        def setup(work: Path, runs=runs):
            _valid_inputs(work)
            return ["run", "exp.yaml", "--runs-dir", runs]

        cases.append(Case("files", f"run: {kind}", setup, stop=STOP_MARK))
    return cases


# --- path traversal ------------------------------------------------------------------------

ESCAPES = ("../../../ESCAPED", "../../../../ESCAPED", "..", "a/b", "", "/ESCAPED-abs", "en\x00")


def traversal_cases() -> list[Case]:
    cases = []
    for fmt in ("llamafactory", "llamafactory --calm-names", "trl"):
        for lang in ESCAPES:
            def setup(work: Path, fmt=fmt, lang=lang):
                rows = [{**row, "lang": lang} for row in hc.pair_rows()[:1]]
                put(work, "pairs.jsonl", hc.jsonl(rows + hc.pair_rows()[1:]))
                put(work, "ESCAPED.json", "the user's file\n")
                put(work, "out/ESCAPED.json", "the user's file\n")
                return ["export", "pairs.jsonl", "--format", *fmt.split(), "--out", "out/lf"]

            cases.append(Case("traversal", f"export {fmt}: pair lang {lang!r}", setup,
                              expect_reject=True, writes=("out/lf",)))
    return cases + name_traversal_cases()


def name_traversal_cases() -> list[Case]:
    cases = []
    for name in ("../ESCAPED", "../../../../ESCAPED", "/tmp/ESCAPED-abs", "..", ".", ""):
        def setup(work: Path, name=name):
            put(work, "exp.yaml", hc.to_yaml(stopped_experiment(name=name)))
            return ["run", "exp.yaml"]

        cases.append(Case("traversal", f"run: name {name!r}", setup, expect_reject=True,
                          stop=STOP_MARK, writes=("runs",)))
        def spec_setup(work: Path, name=name):
            put(work, "spec.yaml", hc.to_yaml({**stopped_spec(), "name": name}))
            return ["index", "build", "spec.yaml"]

        cases.append(Case("traversal", f"index build: spec name {name!r}", spec_setup,
                          expect_reject=True, stop=SPEC_STOP, writes=("indexes",)))
    return cases


# --- experiment YAML -----------------------------------------------------------------------

VALUE = "__PROBE_VALUE__"
KEY_LINE = re.compile(r"^([\w.\[\]]+) \((.+?), (?:default .*|required)\)")
NUMERIC = re.compile(r"(int|float)( \| None)?")


def described_keys(argv: list[str]) -> list[tuple[str, str]]:
    """``(key, type)`` of every key the CLI's own manual lists (``run --describe``)."""
    proc = subprocess.run([sys.executable, "-m", "calm_rag.cli", *argv], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    keys = []
    for line in proc.stdout.splitlines():
        match = KEY_LINE.match(line)
        if match:
            keys.append((match.group(1), match.group(2)))
    return keys


def yaml_with(data: dict, key: str, raw: str) -> str:
    """``data`` as YAML with ``key`` set to the raw YAML text ``raw`` (``.inf``, ``5e-6``)."""
    return hc.to_yaml(hc.set_yaml_key(data, key, VALUE)).replace(VALUE, raw)


def numeric_config_cases() -> list[Case]:
    """Every numeric key of the experiment x out-of-range, non-finite and mistyped values."""
    cases = []
    for key, kind in described_keys(["run", "--describe"]):
        if not NUMERIC.fullmatch(kind):
            continue
        for variant, (raw, expect) in hc.NUMERIC_VALUES.items():
            if variant == "5e-6" and not kind.startswith("float"):
                continue
            base = stopped_experiment()
            if key == "data.train":  # the stop then comes from the held-out count
                base["data"].update(train=1, heldout=STOP)
            text = yaml_with(base, key, raw)
            case = yaml_case("config", f"{key}: {raw}", "exp.yaml", text, ["run"], expect,
                             STOP_MARK)
            case.key = key
            cases.append(case)
    return cases


def yaml_case(family: str, name: str, file: str, text: str | bytes, argv: list[str],
              expect: bool | None, stop: str | None, heavy: bool = False,
              extra: Callable[[Path], None] | None = None) -> Case:
    def setup(work: Path) -> list[str]:
        if extra:
            extra(work)
        put(work, file, text)
        return [*argv, file]

    writes = ("runs",) if argv == ["run"] else ("indexes",)
    return Case(family, name, setup, heavy=heavy, expect_reject=expect, stop=stop,
                writes=writes)


def _stopped_yaml(**changes: object) -> str:
    return hc.to_yaml(stopped_experiment(**changes))


def config_texts() -> dict[str, tuple[str, bool | None]]:
    """Whole experiment files that are malformed as YAML or as an experiment."""
    base = _stopped_yaml()
    return {
        "valid-control": (base, None),
        "duplicate-top-key": (base + "name: other\n", True),
        "duplicate-nested-key": (base + "align:\n  beta: 0.1\n  beta: 0.5\n", True),
        "alias-bomb": (hc.alias_bomb(), True),
        "deep-nesting": (hc.deep_yaml(), True),
        "unknown-top-key": (base + "surprise: 1\n", True),
        "doubled-group": (base + "align:\n  align:\n    beta: 0.1\n", True),
        "tab-indent": ("name: probe\ndata:\n\ttrain: 1\n", True),
        "python-object-tag": ('name: !!python/object/apply:os.system ["touch PWNED"]\n', True),
        "python-name-tag": ("name: !!python/name:os.system\n", True),
        "top-level-list": ("- name\n- probe\n", True),
        "top-level-scalar": ("probe\n", True),
        "empty-file": ("", True),
        "null-document": ("null\n", True),
        "comment-only": ("# nothing here\n", True),
        "two-documents": (base + "---\nname: second\n", True),
        "unclosed-quote": ('name: "probe\n', True),
        "huge-string-name": (_stopped_yaml(name="x" * 5_000_000), None),
    }


# Keys that name a part by string, each set to a name nothing knows.
NAMED_KEYS = ("generator.backend", "retrieval.policy", "vote.tie", "vote.chosen_fallback",
              "vote.unparsed", "align.method", "align.target", "align.precision",
              "answers.chain", "answers.fallback", "data.source", "data.dataset", "vote.pivot")


def config_values() -> dict[str, tuple[dict, bool | None]]:
    """Single keys set to values that load but cannot be right (or a wrong kind)."""
    values: dict[str, tuple[str, object, bool | None]] = {
        "languages-repeated": ("data.languages", ["en", "en"], True),
        "languages-unknown": ("data.languages", ["xx"], True),
        "languages-empty": ("data.languages", [], True),
        "languages-a-string": ("data.languages", "en", True),
        "languages-traversal": ("data.languages", ["../x"], True),
        "languages-alias": ("data.languages", ["EN", "cn"], None),
        "name-number": ("name", 123, True),
        "name-empty": ("name", "", True),
        "options-threads-negative": ("generator.options", {"threads": -1}, True),
        "options-unknown": ("generator.options", {"bogus": 1}, True),
        "options-model": ("generator.options", {"model": "x"}, True),
        "options-a-string": ("generator.options", "fast", True),
        "vote-language-order-unknown": ("vote.language_order", ["xx"], True),
        "lora-targets-empty": ("align.lora.targets", [], None),
        "splits-unknown": ("evaluation.splits", ["nope"], True),
        "runs-dir-empty": ("runs_dir", "", True),
        "data-path-without-source": ("data.path", "q/{lang}.jsonl", None),
    }
    values.update({f"{key}-unknown-name": (key, "nope", True) for key in NAMED_KEYS})
    return {name: (stopped_experiment(**{key: value}), expect)
            for name, (key, value, expect) in values.items()}


def config_cases() -> list[Case]:
    cases = [yaml_case("config", name, "exp.yaml", text, ["run"], expect, STOP_MARK)
             for name, (text, expect) in config_texts().items()]
    cases += [yaml_case("config", name, "exp.yaml", hc.to_yaml(data), ["run"], expect,
                        STOP_MARK) for name, (data, expect) in config_values().items()]
    return cases + model_path_cases() + numeric_config_cases()


def _model_file(work: Path) -> None:
    put(work, "model.bin", b"not a model")


def _model_dir(work: Path) -> None:
    (work / "empty_model").mkdir()


def model_path_cases() -> list[Case]:
    """generator.model that cannot be a model: these runs are not stopped, they must fail."""
    cases = []
    for name, model, extra in (("model-is-a-file", "model.bin", _model_file),
                               ("model-is-an-empty-dir", "empty_model", _model_dir),
                               ("model-relative-name-missing", "no-such-model", None),
                               ("model-dot-path-missing", "./no-such-dir", None),
                               ("model-hub-like-missing", "probe-org/no-such-model", None),
                               ("model-empty", "", None)):
        data = hc.set_yaml_key(hc.experiment(), "generator.model", model)
        data["data"].update(train=1, heldout=0, languages=["en"])
        data["evaluation"] = {"splits": ["train"]}
        cases.append(yaml_case("config", name, "exp.yaml", hc.to_yaml(data), ["run"], True,
                               None, heavy=True, extra=extra))
    return cases


# --- index specs and manifests -------------------------------------------------------------

def spec_cases() -> list[Case]:
    """Numeric keys of ``index keys`` x bad values, unknown names, and bad embedder paths."""
    cases = []
    for key, kind in described_keys(["index", "keys"]):
        if not NUMERIC.fullmatch(kind) or "[]" in key:
            continue
        for _variant, (raw, expect) in hc.NUMERIC_VALUES.items():
            text = yaml_with(stopped_spec(), key, raw)
            case = yaml_case("spec", f"{key}: {raw}", "spec.yaml", text, ["index", "build"],
                             expect, SPEC_STOP)
            case.key = key
            cases.append(case)
    bad = {"corpus-type-unknown": ("corpus", [{"type": "nope", "path": "x"}]),
           "corpus-empty": ("corpus", []), "corpus-a-string": ("corpus", "corpus.jsonl"),
           "metric-unknown": ("faiss.metric", "cosine"), "name-missing": ("name", None),
           "duplicate-sources": ("corpus", stopped_spec()["corpus"] * 2)}
    for name, (key, value) in bad.items():
        text = hc.to_yaml(hc.set_yaml_key(stopped_spec(), key, value))
        cases.append(yaml_case("spec", name, "spec.yaml", text, ["index", "build"], True,
                               SPEC_STOP))
    return cases + spec_model_cases()


def spec_model_cases() -> list[Case]:
    """An embedder or FAISS layout that cannot work, on a valid corpus (loads the embedder)."""
    cases = []
    for name, key, value, extra in (
            ("embedder-is-a-file", "embedder.model", "model.bin", _model_file),
            ("embedder-is-an-empty-dir", "embedder.model", "empty_model", _model_dir),
            ("embedder-name-missing", "embedder.model", "no-such-embedder", None),
            ("faiss-factory-unknown", "faiss.factory", "Nope999", None),
            ("faiss-ivf-too-few-chunks", "faiss.factory", "IVF1024,Flat", None)):
        def both(work: Path, extra=extra) -> None:
            put(work, "corpus.jsonl", hc.jsonl(hc.corpus_rows()))
            if extra:
                extra(work)

        text = hc.to_yaml(hc.set_yaml_key(hc.spec("corpus.jsonl"), key, value))
        cases.append(yaml_case("spec", name, "spec.yaml", text, ["index", "build"], True, None,
                               heavy=True, extra=both))
    return cases


def manifest_cases() -> list[Case]:
    """A hand-edited manifest: each key removed or of the wrong kind, for info/list/query."""
    commands = {"info": ["index", "info", "broken", "--index-dir", "indexes"],
                "list": ["index", "list", "--index-dir", "indexes"],
                "query": ["index", "query", "broken", "pain", "--index-dir", "indexes"]}
    edits = {f"without-{key}": (key, hc.MISSING) for key in hc.manifest()}
    edits.update({"files-a-list": ("files", []), "embedder-a-string": ("embedder", "x"),
                  "chunks-count-a-string": ("chunks", {"count": "many"}),
                  "file-entry-without-bytes": ("files", {"index.faiss": {}}),
                  "file-outside-folder": ("files", {"../../../../etc/hostname": {"bytes": 1}})})
    cases = []
    for command, argv in commands.items():
        for name, (key, value) in edits.items():
            if command == "query" and key not in ("files", "embedder", "format"):
                continue  # query reaches other keys only after loading the embedder
            text = json.dumps(hc.set_path(hc.manifest(), key, value))

            def setup(work: Path, text=text, argv=argv):
                for file in ("index.faiss", "chunks.jsonl"):
                    put(work, f"indexes/broken/{file}", hc.TEN_BYTES)
                put(work, "indexes/broken/manifest.json", text)
                return list(argv)

            cases.append(Case("manifest", f"index {command}: {name}", setup))
    return cases


# --- CLI misuse ----------------------------------------------------------------------------

# Each command with arguments that are valid on their own (the inputs _valid_inputs writes).
COMMANDS: dict[str, list[str]] = {
    "vote": ["vote", "samples.jsonl", "--out", "out"],
    "export": ["export", "pairs.jsonl", "--format", "trl", "--out", "out"],
    "metrics": ["metrics", "samples.jsonl"],
    "models list": ["models", "list"],
    "models prepare": ["models", "prepare", "nope"],
    "index build": ["index", "build", "spec.yaml"],
    "index query": ["index", "query", "broken", "pain", "--index-dir", "indexes"],
    "index info": ["index", "info", "broken", "--index-dir", "indexes"],
    "index list": ["index", "list", "--index-dir", "indexes"],
    "index keys": ["index", "keys"],
    "run": ["run", "exp.yaml"],
    "run --describe": ["run", "--describe"],
}

# Option values that are the wrong kind or out of range, per command.
BAD_OPTIONS: dict[str, list[list[str]]] = {
    "vote": [["--min-agreement", v] for v in ("nan", "inf", "-1", "2", "abc")]
    + [["--max-pairs-per-question", v] for v in ("-1", "0", "abc")]
    + [["--language-order", v] for v in (",,", "xx,yy", "")]
    + [["--pivot", v] for v in ("xx", "")] + [["--extractors", v] for v in ("nope", ",", "")]
    + [["--policy", "nope"], ["--tie", "nope"]],
    "export": [["--form", "nope"], ["--format", "nope"]],
    "metrics": [["--extractors", "nope"]],
    "index query": [["--k", v] for v in ("0", "-1", "abc", "1e99")]
    + [["--policy", "nope"], ["--lang", "xx"], ["--embedder", "nope"]],
    "models prepare": [["../x"], [""]],
    "run": [["--set", v] for v in ("noequals", "=3", "a..b=1", ".=1", "name", "data=3",
                                   "align.learning_rate=.inf", "data.languages=[en, en]",
                                   "name=../ESCAPED", "align.beta=[1", "data.train.x=1")]
    + [["--runs-dir", ""], ["--no-retrieval", "--set", "data.train=0"],
       ["--retrieval", "--set", "retrieval.index=../../nope"]],
    "run --describe": [["--set", "noequals"], ["--no-retrieval"]],
}


def _cli_case(name: str, argv: list[str], stop: str | None = None,
              expect: bool | None = None) -> Case:
    def setup(work: Path) -> list[str]:
        _valid_inputs(work)
        return list(argv)

    writes = ("runs",) if argv[:1] == ["run"] else ("out",)
    return Case("cli", name, setup, expect_reject=expect, stop=stop, writes=writes)


def _positionals(argv: list[str]) -> list[str]:
    """The arguments that are not an option or an option's value."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("--"):
            skip = True
        else:
            out.append(arg)
    return out


def cli_cases() -> list[Case]:
    cases = [_cli_case("no command", []), _cli_case("unknown command", ["frobnicate"]),
             _cli_case("only -v", ["-v"]), _cli_case("models without action", ["models"]),
             _cli_case("index without action", ["index"])]
    for command, argv in COMMANDS.items():
        stop = STOP_MARK if command == "run" else None
        cases.append(_cli_case(f"{command}: unknown flag", [*argv, "--bogus-flag"], stop))
        positional = _positionals(argv)[len(command.split()):]
        # `models prepare` without a name prepares every model: never run that here
        if positional and command != "models prepare":
            dropped = list(argv)
            dropped.remove(positional[-1])
            cases.append(_cli_case(f"{command}: missing {positional[-1]!r}", dropped, stop))
        cases.append(_cli_case(f"{command}: option without its value", [*argv[:-1]], stop)
                     if argv[-2:-1] and argv[-2].startswith("--") else
                     _cli_case(f"{command}: --help", [*argv, "--help"], stop))
        for extra in BAD_OPTIONS.get(command, []):
            expect = True if command == "run" and extra[0] == "--set" else None
            cases.append(_cli_case(f"{command} {' '.join(extra)!r}", [*argv, *extra], stop,
                                   expect))
    return cases + models_cases()


def models_cases() -> list[Case]:
    """``CALM_RAG_HOME`` (the model cache) that is a file or cannot be written."""
    cases = []
    for name, argv, home in (
            ("models list: home is a file", ["models", "list"], "{work}/notes.txt"),
            ("models list: home unwritable", ["models", "list"], "/proc/calm-rag-probe"),
            ("models prepare: home is a file", ["models", "prepare", "all-MiniLM-L6-v2"],
             "{work}/notes.txt"),
            ("models prepare: home unwritable", ["models", "prepare", "all-MiniLM-L6-v2"],
             "/proc/calm-rag-probe")):
        case = _cli_case(name, argv)
        case.env = {"CALM_RAG_HOME": home}
        cases.append(case)
    return cases


# --- issue 26: values handed to a library, plugins, leftovers --------------------------------

# align.trainer values of a wrong type or choice for TRL's config (one per kind of field).
TRAINER_VALUES: dict[str, object] = {
    "warmup_steps": "ten", "lr_scheduler_type": "zigzag", "optim": "foo", "max_steps": 2.5,
    "tf32": "sometimes", "label_names": [1, 2], "loss_weights": ["heavy"], "debug": "nope",
    "log_level": "loud", "include_num_input_tokens_seen": "sometimes",
    "pad_to_multiple_of": "sixteen", "parallelism_config": {"tp_size": 2},
    "logging_strategy": 3, "gradient_checkpointing_kwargs": 5,
}

# Plugin files that fail at import: each must be one line naming plugins[0].
PLUGINS: dict[str, str] = {
    "raises": "raise RuntimeError('plugin settings missing')\n",
    "duplicate-name": "from calm_rag.registries import TIE_POLICIES\n\n"
                      "@TIE_POLICIES.register('first-seen')\ndef mine(t, s, c):\n"
                      "    return None\n",
    "metric-not-callable": "from calm_rag.registries import METRICS\n\n"
                           "METRICS.register('probe_metric', 42)\n",
    "syntax-error": "def f(:\n    pass\n",
    "missing-import": "import no_such_package_probe\n",
}


def _keyed(case: Case, key: str) -> Case:
    case.key = key
    return case


def third_pass_cases() -> list[Case]:
    """Issue 26's kinds: align.trainer values by TRL's field types, report_to backends that
    are not installed, counts without an upper bound, a run name longer than the file system
    allows, and plugins that fail at import."""
    import importlib.util

    # Heavy: the check reads TRL's config classes, and importing TRL takes most of 20 s on a
    # busy 2-core machine.
    cases = [_keyed(yaml_case("library", f"align.trainer.{key}: {value!r}", "exp.yaml",
                              _stopped_yaml(**{"align.trainer": {key: value}}), ["run"], True,
                              STOP_MARK, heavy=True), f"align.trainer.{key}")
             for key, value in TRAINER_VALUES.items()]
    for tracker in ("wandb", "mlflow", "trackio"):
        if importlib.util.find_spec(tracker) is None:  # installed: nothing to refuse
            cases.append(_keyed(yaml_case(
                "library", f"align.report_to: {tracker} (not installed)", "exp.yaml",
                _stopped_yaml(**{"align.report_to": tracker}), ["run"], True, STOP_MARK),
                "align.report_to"))
    cases.append(_keyed(yaml_case(
        "library", "vote.regenerate_tries: 100000000", "exp.yaml",
        _stopped_yaml(**{"vote.chosen_fallback": "regenerate",
                         "vote.regenerate_tries": 100_000_000}), ["run"], True, STOP_MARK),
        "vote.regenerate_tries"))
    cases.append(_keyed(yaml_case("library", "name of 300 characters", "exp.yaml",
                                  _stopped_yaml(name="n" * 300), ["run"], True, STOP_MARK),
                        "name"))
    for name, code in PLUGINS.items():
        cases.append(_keyed(yaml_case(
            "plugins", name, "exp.yaml", _stopped_yaml(plugins=["./plugin.py"]), ["run"], True,
            STOP_MARK, extra=lambda work, code=code: put(work, "plugin.py", code)), "plugins[0]"))
    return cases + load_time_cases() + study_cases() + index_and_leftover_cases()


def _named(case: Case, text: str) -> Case:
    case.names = text
    return case


def _chunk_count_off(work: Path) -> list[str]:
    """A built index whose manifest says 8 chunks over faiss.ntotal's 3 vectors."""
    for file in ("index.faiss", "chunks.jsonl"):
        put(work, f"indexes/broken/{file}", hc.TEN_BYTES)
    put(work, "indexes/broken/manifest.json",
        json.dumps(hc.set_path(hc.built_manifest(), "chunks.count", 8)))
    return ["index", "info", "broken", "--index-dir", "indexes"]


def index_and_leftover_cases() -> list[Case]:
    """Issue 26's index messages and leftovers: a hub corpus's bad name named as ``name``, a
    missing index named as ``retrieval.index`` (at ``--check`` with its line; in a run, before
    any model), a manifest's chunk count named as one, and a hub generator that cannot
    resolve offline leaving no stage entry behind (the ``leftover`` flag)."""
    bad_name = hc.spec()
    bad_name["corpus"] = [{"type": "hub", "name": "not a valid name!!"}]
    missing = {"retrieval": {"enabled": True, "index": "no-such-index"}}
    ran = hc.experiment() | missing  # small enough to reach retrieval (no stop)
    hub_model = hc.set_yaml_key(hc.experiment(), "generator.model", "probe-org/no-such-model")
    hub_model["data"].update(train=1, heldout=0, languages=["en"])
    return [
        _keyed(yaml_case("indexes", "hub corpus named 'not a valid name!!'", "spec.yaml",
                         hc.to_yaml(bad_name), ["index", "build"], True, None),
               "corpus[0].name"),
        _keyed(yaml_case("indexes", "missing retrieval.index at --check", "exp.yaml",
                         _stopped_yaml(**missing), ["run", "--check"], True, STOP_MARK),
               "retrieval.index"),
        _named(yaml_case("indexes", "missing retrieval.index in a run", "exp.yaml",
                         hc.to_yaml(ran), ["run"], True, None), "field 'retrieval.index'"),
        _named(Case("indexes", "manifest chunks.count not faiss.ntotal", _chunk_count_off,
                    expect_reject=True), "field 'chunks.count'"),
        # Heavy: before the fix the failure came from transformers' loader (torch imported).
        _named(yaml_case("leftovers", "generator a hub id, offline (HF_HUB_OFFLINE=1)",
                         "exp.yaml", hc.to_yaml(hub_model), ["run"], True, None, heavy=True),
               "field 'generator.model'"),
    ]


def _too_many_for_here() -> dict[str, int]:
    """Parallel sizes past this machine (no GPU asked for): a worker per NUMA node, an engine
    per core (issue 26's example: tensor_parallel_size 4 on a 2-core CPU)."""
    from calm_rag.runtime.hardware import numa_nodes, usable_cores

    return {"tensor_parallel_size": max(4, numa_nodes() + 1),
            "pipeline_parallel_size": numa_nodes() + 1,
            "data_parallel_size": usable_cores() + 1}


# Case name: the keys set (a few together for a combination), the key the error must name.
LOAD_TIME: dict[str, tuple[dict[str, object], str]] = {
    "sampling.n: 100000": ({"sampling.n": 100_000}, "sampling.n"),
    "evaluation.sampling.max_tokens: 10^7": ({"evaluation.sampling.max_tokens": 10**7},
                                             "evaluation.sampling.max_tokens"),
    "shard_questions: 2^60": ({"shard_questions": 2**60}, "shard_questions"),
    "retrieval.fusion.depth: 2^60": ({"retrieval.fusion.depth": 2**60},
                                     "retrieval.fusion.depth"),
    "data.languages: [en, zh-Hant-TW]": ({"data.languages": ["en", "zh-Hant-TW"]},
                                         "data.languages"),
}
COMBINATIONS: dict[str, tuple[dict[str, object], str]] = {
    "data.language_sets: [[en, fr], [fr, en]]": (
        {"data.language_sets": [["en", "fr"], ["fr", "en"]]}, "data.language_sets[1]"),
    "heldout_languages leave one language to vote": (
        {"data.languages": ["en", "fr", "de"], "evaluation.heldout_languages": ["de", "fr"]},
        "evaluation.heldout_languages"),
    "sampling.forced_answer on hf": ({"generator.backend": "hf", "generator.options": {},
                                      "sampling.forced_answer": True},
                                     "sampling.forced_answer"),
    "retrieval.fusion.rrf_k without rrf": ({"retrieval.fusion.rrf_k": 10},
                                           "retrieval.fusion.rrf_k"),
}


def load_time_cases() -> list[Case]:
    """Issue 26's deliverables 1 and 3: parallel sizes against the devices here, counts past
    their bound, languages a set lacks, and combinations that cannot run together, each
    refused at load by its full key and line."""
    cases = []
    for key, value in _too_many_for_here().items():
        case = _keyed(yaml_case("library", f"generator.options.{key}: {value} (past this "
                                "machine)", "exp.yaml", _stopped_yaml(**{
                                    "generator.backend": "vllm",
                                    "generator.options": {key: value}}), ["run"], True,
                                STOP_MARK), f"generator.options.{key}")
        case.env = {"CUDA_VISIBLE_DEVICES": ""}  # the CPU's limits, on a GPU machine too
        cases.append(case)
    for family, table in (("library", LOAD_TIME), ("combinations", COMBINATIONS)):
        cases += [_keyed(yaml_case(family, name, "exp.yaml", _stopped_yaml(**changes), ["run"],
                                   True, STOP_MARK), key)
                  for name, (changes, key) in table.items()]
    return cases


def trainer_table() -> str:
    """Every field type TRL's DPOConfig declares (an enum's choices as a type of their own),
    one bad value for the first field of each type, and the one line the loader printed for
    it: the acceptance table of issue 26. In process: TRL is imported once."""
    import typing

    import trl

    from calm_rag.errors import InputError
    from calm_rag.experiment import load_experiment
    from calm_rag.training.config import OWNED, TRL_STRINGS

    hints, kinds = typing.get_type_hints(trl.DPOConfig), {}
    for f in dataclasses.fields(trl.DPOConfig):
        if f.name not in OWNED:
            choices = f.metadata.get("choices", TRL_STRINGS.get(f.name))
            hint = hints[f.name]
            kind = ("str, choices in its metadata" if choices else hint.__name__
                    if isinstance(hint, type) else str(hint).replace("typing.", ""))
            kinds.setdefault(kind, []).append(f.name)
    lines = ["| TRL type | fields | field tried | bad value | exit line |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "exp.yaml"
        for kind, names in kinds.items():
            message = "accepted"
            for bad in ("zigzag", 2.5, 5, [1, 2], {"a": 1}):
                path.write_text(_stopped_yaml(**{"align.trainer": {names[0]: bad}}),
                                encoding="utf-8")
                try:
                    load_experiment(path)
                except InputError as err:
                    message = str(err).replace(folder + "/", "")
                    break
            lines.append(f"| {_cell(kind, 60)} | {len(names)} | {names[0]} | {bad!r} | "
                         f"{_cell(message, 400)} |")
    return "\n".join(lines)


def study_cases() -> list[Case]:
    """``study votes`` with nothing to study: one language, or --min-languages above those
    present. Each must say why in one line (exit 2), not print an empty table."""
    one_language = hc.jsonl([r for r in hc.sample_rows() if r["question"]["lang"] == "en"])

    def setup(extra: list[str], text: str | None) -> Setup:
        def write(work: Path) -> list[str]:
            _valid_inputs(work)
            if text is not None:
                put(work, "samples.jsonl", text)
            return ["study", "votes", "samples.jsonl", *extra]
        return write

    # No key: the error names the flag --min-languages, which has no line in a file.
    return [Case("combinations", name, setup(extra, text), expect_reject=True, writes=("out",))
            for name, extra, text in (
                ("study votes on one language", [], one_language),
                ("study votes --min-languages 4 on 3 languages", ["--min-languages", "4"], None))]


CASE_FAMILIES: dict[str, Callable[[], list[Case]]] = {
    "encoding": encoding_cases,
    "json": json_cases,
    "fields": field_cases,
    "duplicates": duplicate_cases,
    "files": lambda: input_path_cases() + output_cases(),
    "traversal": traversal_cases,
    "config": config_cases,
    "spec": spec_cases,
    "manifest": manifest_cases,
    "cli": cli_cases,
    "third": third_pass_cases,
}


# --- report --------------------------------------------------------------------------------

def all_cases(only: list[str] | None, match: str | None) -> list[Case]:
    cases = []
    for family, make in CASE_FAMILIES.items():
        if not only or family in only:
            cases += make()
    if match:
        cases = [c for c in cases if re.search(match, c.name)]
    return cases


def _cell(text: str, width: int = 120) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: list[Row]) -> str:
    lines = ["| family | case | exit | seconds | verdict | flags | last line |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        exit_code = "-" if r.exit is None else str(r.exit)
        lost = f" lost: {', '.join(r.lost)}" if r.lost else ""
        lines.append(f"| {r.family} | {_cell(r.case, 70)} | {exit_code} | {r.seconds} | "
                     f"{r.verdict} | {','.join(r.flags)} | {_cell(r.last_line + lost)} |")
    return "\n".join(lines)


def summary(rows: list[Row]) -> str:
    verdicts = sorted({r.verdict for r in rows})
    flags = sorted({f for r in rows for f in r.flags})
    head = ["family", "cases", *verdicts, *(f"flag:{f}" for f in flags)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for family in [*dict.fromkeys(r.family for r in rows), "all"]:
        group = [r for r in rows if family in ("all", r.family)]
        by_verdict = Counter(r.verdict for r in group)
        by_flag = Counter(f for r in group for f in r.flags)
        cells = [family, str(len(group)), *(str(by_verdict[v]) for v in verdicts),
                 *(str(by_flag[f]) for f in flags)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _kind(row: Row) -> str:
    """What went wrong, for grouping: the verdict, and for tracebacks the exception type."""
    if row.verdict == "TRACEBACK":
        match = re.match(r"([\w.]+(Error|Exception|Interrupt))\b", row.last_line)
        return f"TRACEBACK {match.group(1) if match else '(other)'}"
    return row.verdict


def failures(rows: list[Row]) -> str:
    """Every case that is not OK, or is flagged, grouped by kind with its last line."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        if row.verdict not in ("OK", "SKIP"):
            groups.setdefault(_kind(row), []).append(row)
        for flag in row.flags:
            groups.setdefault(f"flag {flag}", []).append(row)
    lines = []
    for kind in sorted(groups, key=lambda k: (k.startswith("flag"), k)):
        lines.append(f"\n### {kind} ({len(groups[kind])})\n")
        for r in groups[kind]:
            lost = f" [lost: {', '.join(r.lost)}]" if r.lost else ""
            lines.append(f"- {r.family} / {r.case} (exit {r.exit}): {_cell(r.last_line)}{lost}")
    return "\n".join(lines)


def run_all(cases: list[Case], jobs: int) -> Iterator[Row]:
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(run_case, cases)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=list(CASE_FAMILIES),
                        help="run only this family (repeatable)")
    parser.add_argument("--match", metavar="REGEX", help="only cases whose name matches")
    parser.add_argument("--json", type=Path, metavar="PATH", help="save every row as JSON")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once (default 1)")
    parser.add_argument("--list", action="store_true", help="list the cases, run nothing")
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="print the report of rows saved by --json, run nothing")
    parser.add_argument("--trainer-table", action="store_true",
                        help="print each align.trainer field type TRL declares, a bad value "
                             "and the loader's message; run nothing else")
    args = parser.parse_args(argv)
    if args.trainer_table:
        print(trainer_table())
        return 0
    if args.from_json:
        rows = [Row(**r) for r in json.loads(args.from_json.read_text())]
        return report(rows)
    cases = all_cases(args.only, args.match)
    if args.list:
        print("\n".join(f"{c.family}\t{c.name}" for c in cases))
        return 0
    rows = []
    for row in run_all(cases, args.jobs):
        rows.append(row)
        print(f"[{len(rows)}/{len(cases)}] {row.verdict:9} {row.family}: {row.case}",
              file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1,
                                        ensure_ascii=False))
    return report(rows)


def report(rows: list[Row]) -> int:
    print(f"# Hostile-input probe: {len(rows)} cases\n\n{summary(rows)}\n\n{table(rows)}")
    print(f"\n## Not OK or flagged, by kind\n{failures(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
