"""The README's Python examples still run: each ```python block is executed as written (a
registered part is then used and removed), or against a tiny run, or listed in SKIPPED with the
reason. A block added to the README without an entry here fails the census test.

The notebooks are executed by tests/test_notebooks.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from calm_rag.registries import ALL
from calm_rag.sampling import SamplingParams
from tests.helpers import experiment, make_samples, write_experiment

REPO = Path(__file__).resolve().parents[1]
READMES = (REPO / "README.md", REPO / "pipelines" / "README.md")
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

# A block is known by a line it holds (line numbers move as the README grows).
RUN_AS_WRITTEN = ('@TIE_POLICIES.register("last-seen")', '@SAMPLERS.register("echo")',
                  '@ALIGN_METHODS.register("chosen-sft")')
RUN_ON_A_TINY_RUN = 'result = run_experiment(experiment)'
SKIPPED = {
    'retriever = Retriever.open("medical-demo")':
        "needs the medical-demo index built (calm-rag index build: the corpus embedded by "
        "multilingual-e5-small, minutes on 2 cores); tests/test_retrieval_recall.py builds "
        "that index and queries it the same way",
}


def python_blocks() -> list[tuple[str, str]]:
    """Every ```python block of the READMEs, as (``file:line``, code)."""
    blocks = []
    for readme in READMES:
        if not readme.is_file():
            continue
        text = readme.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start(1)) + 1
            blocks.append((f"{readme.relative_to(REPO)}:{line}", match.group(1)))
    return blocks


def block(marker: str) -> str:
    (code,) = [code for _, code in python_blocks() if marker in code]
    return code


@pytest.fixture
def registered():
    """Parts a block registers are removed afterwards: other tests see the shipped ones."""
    before = {kind: set(registry.names()) for kind, registry in ALL.items()}
    yield
    for kind, registry in ALL.items():
        for name in set(registry.names()) - before[kind]:
            registry.unregister(name)


def test_every_python_block_runs_or_says_why_not():
    known = (*RUN_AS_WRITTEN, RUN_ON_A_TINY_RUN, *SKIPPED)
    blocks = python_blocks()
    assert len(blocks) == 5  # README.md's; pipelines/README.md has none
    for where, code in blocks:
        matched = [marker for marker in known if marker in code]
        assert len(matched) == 1, f"{where}: run it in this file or list it in SKIPPED"


def test_the_plugin_example_registers_a_tie_policy_and_a_metric(registered):
    from calm_rag.registries import METRICS, TIE_POLICIES
    from calm_rag.vote.voting import VoteConfig

    exec(block(RUN_AS_WRITTEN[0]), {})
    samples = make_samples({"en": ["A", "B"], "fr": ["B", "A"]})
    assert TIE_POLICIES.get("last-seen")(["A", "B"], samples, VoteConfig()) == "A"
    rows = [{"answers": {"en": "A", "fr": "B"}}, {"answers": {"en": "A", "fr": None}}]
    assert METRICS.get("answered_languages")(rows, ["en", "fr"]) == 1


def test_the_sampler_example_registers_a_backend_that_samples(registered):
    from calm_rag.sampling import make_sampler

    exec(block(RUN_AS_WRITTEN[1]), {})
    echo = make_sampler("echo", {"prefix": "> "})
    chat = [{"role": "user", "content": "hi"}]
    assert echo.generate([chat], SamplingParams(n=2, max_tokens=8)) == [["> hi", "> hi"]]


def test_the_align_method_example_registers_a_method(registered):
    pytest.importorskip("trl")
    from calm_rag.registries import ALIGN_METHODS

    exec(block(RUN_AS_WRITTEN[2]), {})
    method = ALIGN_METHODS.get("chosen-sft")
    assert method.trl_config == "SFTConfig"
    assert method.rows([], [], ["pair 1", "pair 2"]) == ["pair 1", "pair 2"]


def test_the_library_example_loads_the_demo_with_an_override(monkeypatch):
    from calm_rag import load_experiment

    monkeypatch.chdir(REPO)  # the example's path is relative to the clone
    (first,) = [line for line in block(RUN_ON_A_TINY_RUN).splitlines()
                if "load_experiment(" in line and "=" in line]
    namespace: dict = {"load_experiment": load_experiment}
    exec(first, namespace)
    assert namespace["experiment"].name == "demo"
    assert namespace["experiment"].retrieval.k == 3


@pytest.mark.slow
def test_the_library_example_runs_on_a_tiny_experiment(tiny_model, tmp_path, monkeypatch):
    """The whole block, with the demo's file swapped for the tiny model's experiment (the demo
    itself samples a real model for minutes: ``make demo``)."""
    # No training (align.rounds: 0): the example is about running and opening a run.
    path = write_experiment(tmp_path, experiment(tiny_model, tmp_path / "runs",
                                                 align__rounds=0))
    code = block(RUN_ON_A_TINY_RUN)
    assert '"pipelines/demo.yaml"' in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(code.replace('"pipelines/demo.yaml"', repr(str(path))), namespace)
    run = namespace["run"]
    assert run.path == namespace["result"].folder
    assert run.path.parent == tmp_path / "runs" / "tiny"
    assert namespace["experiment"].retrieval.k == 3
    assert (run.path / "report.md").is_file() and (run.path / "manifest.json").is_file()
