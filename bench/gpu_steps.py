"""The steps of the GPU check (bench/gpu_check.py): each runs one CUDA path of calm_rag on tiny
models built here, and says how long it took and one figure that shows where it ran.

On a GPU the figure is the device of the model's tensors and ``torch.cuda.max_memory_allocated``
(or, for a training child process, how much device memory came into use while it ran); on the
CPU dry run the same steps run on the CPU, so a broken step is found before a GPU is lent.

The models are built here because the default ones do not travel (their packages are ~95 MB, a
GPU call carries 64 MiB): a 2-layer Llama (``tests/tiny_model.py``) and a 2-layer BERT saved as
a sentence-transformers folder in the on-disk layout every sentence-transformers version reads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "pipelines" / "demo.yaml"
CORPUS = "package:calm_rag/retrieval/data/medical_corpus.jsonl"
INDEX = "medical-tiny"
KILL_AFTER_SEAL = "CALM_GPU_CHECK_KILL_AFTER_SEAL"  # the DPO child kills itself after a seal
MODULES_FILE = "modules.json"  # what a child step imported, for the dry run's coverage check
FAILED = "FAILED"  # how a failed step's figure starts


@dataclass(frozen=True)
class Target:
    """Where the steps run: ``cuda`` in bf16 on the GPU machine, ``cpu`` in fp32 on a dry run."""

    device: str

    @property
    def gpu(self) -> bool:
        return self.device == "cuda"

    @property
    def dtype(self) -> str:
        return "bfloat16" if self.gpu else "float32"

    @property
    def precision(self) -> str:
        return "bf16" if self.gpu else "fp32"


@dataclass(frozen=True)
class StepResult:
    """One step: its name, wall time and the figure that shows where it ran."""

    name: str
    seconds: float
    figure: str


# --------------------------------------------------------------------------- tiny models


def build_models(work: Path) -> tuple[Path, Path]:
    """The tiny Llama (sharp weights: its answers differ per language, so votes give pairs)
    and the tiny sentence-transformers embedder, in ``work``."""
    sys.path.insert(0, str(ROOT))  # tests/ travels with the tree; its builder is reused
    from tests.tiny_model import build_tiny_model

    llama = build_tiny_model(work / "tiny-llama", init_range=0.5)
    return llama, build_tiny_embedder(work / "tiny-embedder")


def build_tiny_embedder(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT (hidden size 32) with a byte-level BPE tokenizer
    trained on the bundled medical corpus, mean pooling and normalisation, as a
    sentence-transformers folder (written by hand: modules.json is the format every
    sentence-transformers version loads, its Python module API moved between versions)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_corpus_lines(), trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", model_max_length=512)
    tokenizer.save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=512, pad_token_id=0)
    torch.manual_seed(seed)
    transformers.BertModel(config).save_pretrained(folder)
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"}])
    _write_json(folder / "sentence_bert_config.json",
                {"max_seq_length": 512, "do_lower_case": False})
    _write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": 32, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False})
    (folder / "2_Normalize").mkdir(exist_ok=True)
    return folder


def _corpus_lines() -> list[str]:
    from importlib import resources

    text = (resources.files("calm_rag") / "retrieval" / "data" / "medical_corpus.jsonl"
            ).read_text(encoding="utf-8")
    return [json.loads(line)["text"] for line in text.splitlines() if line.strip()]


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


# --------------------------------------------------------------------------- measuring


def timed(name: str, target: Target, run: Callable[[], str]) -> StepResult:
    """Run one step; its figure gets the peak device memory this process allocated in it. A
    step that fails is a result too (its traceback goes to stderr): the next steps still run,
    so one GPU run reports every path."""
    import torch

    if target.gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        figure = run()
    except Exception as err:  # reported; the other steps go on
        print(f"--- {name} failed ---\n{traceback.format_exc()[-4000:]}", file=sys.stderr)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return StepResult(name, time.perf_counter() - started,
                          f"{FAILED} {type(err).__name__}: {first}")
    if target.gpu:
        torch.cuda.synchronize()
        figure += f"; max_memory_allocated {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB"
    return StepResult(name, time.perf_counter() - started, figure)


def skipped(name: str, needs: str) -> StepResult:
    return StepResult(name, 0.0, f"{FAILED} skipped: needs the {needs} step")


@contextmanager
def device_memory_rise(target: Target) -> Iterator[list[float]]:
    """Inside the block, the rise (MiB) of the device memory in use by every process, polled:
    a child process's use of the GPU, which its parent's allocator does not see."""
    peak = [0.0]
    if not target.gpu:
        yield peak
        return
    import torch

    free, total = torch.cuda.mem_get_info()
    baseline, done = total - free, threading.Event()

    def poll() -> None:
        while not done.is_set():
            free_now, _ = torch.cuda.mem_get_info()
            peak[0] = max(peak[0], (total - free_now - baseline) / 2**20)
            done.wait(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        yield peak
    finally:
        done.set()
        poller.join()


def _device_of(model: Any) -> str:
    params = next(model.parameters())
    return f"{params.device} {str(params.dtype).removeprefix('torch.')}"


# --------------------------------------------------------------------------- the steps


def sampler_step(llama: Path, target: Target) -> str:
    """The ``hf`` sampler placed by ``device_map`` (accelerate) in the target dtype."""
    from calm_rag.sampling import SamplingParams, make_sampler

    sampler: Any = make_sampler("hf", {"batch_size": 4, "dtype": target.dtype,
                                       "device_map": "auto", "progress": False},
                                model=str(llama))
    chats = [[{"role": "user", "content": f"Question {i}: where is milk kept? Answer:"}]
             for i in range(4)]
    texts = sampler.generate(chats, SamplingParams(n=3, temperature=0.8, max_tokens=16, seed=0))
    if [len(group) for group in texts] != [3] * 4:
        raise RuntimeError(f"expected 4 prompts x 3 samples, got {texts!r}")
    placed = getattr(sampler.model, "hf_device_map", {})
    return (f"weights {_device_of(sampler.model)}, device_map {placed}, "
            f"{sampler.last_stats['new_tokens']} new tokens at "
            f"{sampler.last_stats['tokens_per_s']:.0f} tok/s")


def dpo_rows() -> list[Any]:
    """Four preference pairs in four languages whose chosen and rejected answers differ (made
    here: the sampler's own pairs come in the experiment step)."""
    from calm_rag.records import PreferencePair

    stems = {"en": "Where is milk kept?", "zh": "牛奶应该放在哪里？",
             "fr": "Où garde-t-on le lait ?", "de": "Wo wird Milch aufbewahrt?"}
    return [PreferencePair(
        question_id="q1", lang=lang, setting="zero-shot", instruction="Answer the question.",
        input=f"{stem}\nA. shelf\nB. refrigerator\nC. oven",
        chosen="Explanation: milk spoils when warm. Answer: B",
        rejected="Explanation: ovens are warm. Answer: C", chosen_answer="B",
        rejected_answer="C", vote_counts={"B": 3, "C": 1},
        chosen_sample_id=f"q1/{lang}/zero-shot/0", rejected_sample_id=f"q1/{lang}/zero-shot/1")
        for lang, stem in stems.items()]


def align_config(target: Target, **changes: Any) -> Any:
    from calm_rag.training import AlignConfig, LoraConfig

    values: dict[str, Any] = dict(
        learning_rate=2e-2, batch_size=1, max_length=128, precision=target.precision,
        lora=LoraConfig(r=4, alpha=8, dropout=0.0), threads=None if target.gpu else 1)
    return AlignConfig(**(values | changes))


def dpo_resume_step(llama: Path, work: Path, target: Target) -> tuple[str, Path]:
    """DPO (TRL + PEFT) with a checkpoint every step: a child trains until the first sealed
    checkpoint and kills itself (SIGKILL, no clean-up), then the same training here resumes
    from it. Returns the figure and the adapter, which the scorer step applies unmerged."""
    from calm_rag.training.checkpoints import checkpoint_folder, last_checkpoint

    out = work / "dpo"
    child = subprocess.run(
        [sys.executable, str(Path(__file__)), "dpo-child", str(llama), str(out), target.device,
         str(work / "dpo-child")], cwd=ROOT, env=os.environ | {KILL_AFTER_SEAL: "1"},
        capture_output=True, text=True)
    kept = last_checkpoint(checkpoint_folder(out))
    if child.returncode != -signal.SIGKILL or kept is None or out.exists():
        said = [line for line in child.stderr.splitlines() if line.strip()] or ["no output"]
        raise RuntimeError(f"the DPO child was to die after its first checkpoint, but exited "
                           f"{child.returncode} with checkpoint {kept}: {said[-1].strip()}\n"
                           f"{child.stderr[-3000:]}")
    result = train_dpo_here(llama, out, target)
    saved = json.loads((out / "train_log.json").read_text(encoding="utf-8"))
    if saved["resumed_from"] != kept.name:
        raise RuntimeError(f"resumed from {saved['resumed_from']}, not {kept.name}")
    steps = [s["step"] for s in saved["steps"]]
    return (f"killed after {kept.name}, resumed from {saved['resumed_from']}, steps logged "
            f"after it {steps}, final loss {saved['steps'][-1]['loss']:.4f}, precision "
            f"{saved['config']['precision']}", result.adapter_dir)


def train_dpo_here(llama: Path, out: Path, target: Target) -> Any:
    """Two epochs of DPO over the four rows (8 steps), a checkpoint a step."""
    from calm_rag.training import train_dpo

    config = align_config(target, epochs=2, save_steps=1)
    return train_dpo(str(llama), dpo_rows(), config, out)


def dpo_child(llama: Path, out: Path, device: str, modules_dir: Path) -> None:
    """The killed half of :func:`dpo_resume_step`: trains, and dies right after the first
    checkpoint is sealed (a kill at a known point: on a GPU the steps are too quick for a
    parent to aim one). Its imports are written first for the coverage check."""
    from calm_rag.training import checkpoints, common

    sealing = checkpoints.sealing_callback

    def sealing_then_kill(trainer: Any) -> Any:
        inner = sealing(trainer)
        on_save = inner.on_save

        def save_and_die(*args: Any, **kwargs: Any) -> Any:
            control = on_save(*args, **kwargs)
            write_modules(modules_dir)
            os.kill(os.getpid(), signal.SIGKILL)
            return control

        inner.on_save = save_and_die
        return inner

    if os.environ.get(KILL_AFTER_SEAL):
        common.sealing_callback = sealing_then_kill  # train_into adds it when save_steps is set
    train_dpo_here(llama, out, Target(device))


def write_modules(folder: Path) -> None:
    """The top-level modules this process imported, with the file each came from, for the dry
    run's coverage check."""
    _write_json(folder / MODULES_FILE, imported_files())


def imported_files() -> dict[str, str | None]:
    """``{top-level module: its file}`` of this process (None: made at run time by an
    extension, such as ``cython_runtime``; blocked modules are left out)."""
    return {name: getattr(module, "__file__", None) for name, module in sys.modules.items()
            if "." not in name and module is not None}


def scorer_step(llama: Path, adapter: Path, target: Target) -> str:
    """The log-prob scorer with the trained adapter applied on top of the base (unmerged on
    disk), on the target device: the option scores of two samples."""
    from calm_rag.records import Question, Sample
    from calm_rag.sampling.letter_scores import LetterScorer

    scorer = LetterScorer.load(str(llama), dtype=target.dtype, device=target.device,
                               adapter=str(adapter), progress=False)
    question = Question(id="q1", lang="en", stem="Where is milk kept?",
                        options={"A": "shelf", "B": "refrigerator", "C": "oven"}, answer="B")
    samples = [Sample(question=question, text=text, index=i, setting="zero-shot",
                      instruction="Answer the question.", input="Where is milk kept?")
               for i, text in enumerate(["Explanation: milk spoils when warm. Answer:",
                                         "Explanation: ovens are warm. Answer:"])]
    scores = scorer.score(samples)
    best = [max(s, key=s.__getitem__) for s in scores]
    first = {label: round(value, 2) for label, value in scores[0].items()}
    return f"weights {_device_of(scorer.model)}, best options {best}, log-probs {first}"


def accelerate_step(llama: Path, work: Path, target: Target) -> str:
    """DPO under ``accelerate launch`` with one process (its rank trains on the GPU)."""
    from calm_rag.training import train_dpo

    config = align_config(target, launcher="accelerate", num_processes=1)
    with device_memory_rise(target) as rise:
        train_dpo(str(llama), dpo_rows(), config, work / "launched")
    saved = json.loads((work / "launched" / "train_log.json").read_text(encoding="utf-8"))
    used = f", device memory rose {rise[0]:.0f} MiB while it ran" if target.gpu else ""
    return (f"{saved['processes']} process (backend {saved['backend']}), "
            f"{len(saved['steps'])} steps{used}")


def retrieval_step(embedder: Path, work: Path) -> tuple[str, Path]:
    """Embed the bundled medical corpus with the tiny embedder (on the GPU when there is one:
    sentence-transformers' default device), index it in faiss-cpu, and search: the top hit
    of each query is the exact nearest chunk (a brute-force product here). Its passages are
    indexed whole (``chunking: none``): llama-index's splitter, CPU work, does not travel."""
    import numpy as np

    from calm_rag.retrieval import Retriever, build_index, spec_from_dict

    spec = spec_from_dict({
        "name": INDEX, "corpus": [{"type": "jsonl", "path": CORPUS}],
        "chunking": "none",
        "embedder": {"model": str(embedder), "batch_size": 32},
        "faiss": {"factory": "Flat", "metric": "ip"}})
    built = build_index(spec, work / "indexes", progress=False)
    retriever = Retriever.open(built.path)
    queries = ["Where is the sodium reabsorbed?", "Wie tief sind Thoraxkompressionen?"]
    hits = retriever.retrieve_many(queries, k=3)
    vectors = retriever.index.reconstruct_n(0, retriever.index.ntotal)
    exact = np.argmax(vectors @ retriever.embedder.embed_queries(queries).T, axis=0).tolist()
    found = [group[0].chunk.row for group in hits]
    if found != exact:
        raise RuntimeError(f"faiss top hits {found} differ from the exact search's {exact}")
    return (f"embedder {_device_of(retriever.embedder.model)}, {built.chunks} chunks, "
            f"faiss {type(retriever.index).__name__} top hits {found} = exact", built.path)


def experiment_step(llama: Path, index: Path, work: Path, target: Target) -> tuple[str, Path]:
    """The demo experiment (pipelines/demo.yaml: 6 languages, 4 + 3 questions, zero-shot and
    retrieval) on the ``hf`` backend with the tiny models, option scores on, the adapter not
    merged, DPO with checkpoints. Returns the figure and the run's folder."""
    from calm_rag import load_experiment, run_experiment

    overrides = [
        "generator.backend=hf", f"generator.model={llama}",
        f"generator.options.device={target.device}", f"generator.options.dtype={target.dtype}",
        "generator.options.progress=false", "sampling.forced_answer=false",
        "evaluation.sampling.forced_answer=false", "evaluation.option_scores=true",
        f"retrieval.index={INDEX}", f"retrieval.index_dir={index.parent}",
        "align.merge=false", "align.save_steps=2", f"align.precision={target.precision}",
        f"runs_dir={work / 'runs'}"]
    if not target.gpu:
        overrides += ["generator.options.threads=2", "align.threads=2"]
    experiment = load_experiment(DEMO, overrides)
    result = run_experiment(experiment, progress=False)
    manifest = json.loads((result.folder / "manifest.json").read_text(encoding="utf-8"))
    seconds: dict[str, list[float]] = {}
    for stage in manifest["stages"]:
        if not stage["cached"]:
            seconds.setdefault(stage["stage"], []).append(stage["seconds"])
    stages = ", ".join(f"{name} {len(times)}x {sum(times):.1f}s"
                       for name, times in seconds.items())
    return f"stages: {stages}", result.folder


def run_steps(work: Path, target: Target) -> tuple[list[StepResult], Path | None]:
    """Every step in order; returns their results and the experiment's run folder (None when
    it failed). A step whose input a failed step was to make is skipped."""
    made: dict[str, Any] = {}
    results = [timed("build tiny models", target, lambda: _build(work, made))]
    if "llama" not in made:
        return results, None
    llama, embedder = made["llama"], made["embedder"]
    results.append(timed("hf sampler (device_map)", target, lambda: sampler_step(llama, target)))
    results.append(timed("DPO, checkpoint, kill, resume", target, lambda: _keep(
        dpo_resume_step(llama, work, target), made, "adapter")))
    results.append(timed("scorer + unmerged adapter", target,
                         lambda: scorer_step(llama, made["adapter"], target))
                   if "adapter" in made else skipped("scorer + unmerged adapter", "DPO"))
    results.append(timed("accelerate launch, 1 process", target,
                         lambda: accelerate_step(llama, work, target)))
    results.append(timed("embed + faiss-cpu search", target,
                         lambda: _keep(retrieval_step(embedder, work), made, "index")))
    results.append(timed("demo experiment (hf)", target, lambda: _keep(
        experiment_step(llama, made["index"], work, target), made, "run"))
        if "index" in made else skipped("demo experiment (hf)", "index"))
    return results, made.get("run")


def _build(work: Path, made: dict[str, Any]) -> str:
    made["llama"], made["embedder"] = build_models(work)
    return f"{made['llama'].name} and {made['embedder'].name} in {work}"


def _keep(pair: tuple[str, Any], made: dict[str, Any], key: str) -> str:
    """The figure of a step that also makes something a later step uses."""
    made[key] = pair[1]
    return pair[0]


if __name__ == "__main__" and sys.argv[1:2] == ["dpo-child"]:
    _llama, _out, _device, _modules = sys.argv[2:6]
    sys.path.insert(0, str(ROOT))
    dpo_child(Path(_llama), Path(_out), _device, Path(_modules))
