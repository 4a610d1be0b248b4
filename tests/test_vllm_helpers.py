"""The ``vllm`` backend's helpers that need no engine: what the engine tells the parent's
progress bar (finished prompts only, through vLLM's two uses of the tqdm class it is given, as
``LLM.generate`` makes them), and where grammars are compiled (tests/test_vllm.py checks a
real engine)."""

from __future__ import annotations

from types import SimpleNamespace

from calm_rag.sampling.vllm_args import compile_grammars_in_step, forward_progress


def test_rendering_is_not_counted_and_each_finished_prompt_is_once() -> None:
    told: list[int] = []
    forward = forward_progress(told.append)
    # tqdm updates an iterable's bar every mininterval (0.1 s); rendering 72 prompts takes
    # longer than that on a CPU: here every item, as a slow rendering would.
    for _ in forward(range(72), desc="Rendering prompts", mininterval=0, miniters=1):
        pass
    assert told == []
    bar = forward(total=72, desc="Processed prompts", dynamic_ncols=True)
    for finished in range(72):
        bar.update(3 if finished % 2 else 1)  # vLLM passes a prompt's n outputs
    bar.close()
    assert told == [1] * 72


def engine_with(manager: object) -> SimpleNamespace:
    """An ``LLM`` as far as compile_grammars_in_step reads it: llm_engine.engine_core (the
    in-process client).engine_core (the core).structured_output_manager."""
    core = SimpleNamespace(structured_output_manager=manager)
    return SimpleNamespace(llm_engine=SimpleNamespace(engine_core=SimpleNamespace(
        engine_core=core)))


def test_grammars_compiled_in_step_where_the_core_is_in_this_process() -> None:
    manager = SimpleNamespace(_use_async_grammar_compilation=True)
    assert compile_grammars_in_step(engine_with(manager)) is True
    assert manager._use_async_grammar_compilation is False
    # A core in another process (a client without the core), or a vLLM that renamed it.
    remote = SimpleNamespace(llm_engine=SimpleNamespace(engine_core=SimpleNamespace()))
    assert compile_grammars_in_step(remote) is False
    assert compile_grammars_in_step(engine_with(SimpleNamespace())) is False
