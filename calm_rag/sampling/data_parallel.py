"""Several sampling engines as one: a call's prompts split into contiguous slices, one slice per
engine, sent at once, and the answers put back in order.

Each prompt is seeded from the call's seed and its own tokens (``vllm_backend.request_params``),
so a prompt's texts do not depend on the engine that samples it nor on the prompts beside it:
the texts are the same whatever the number of engines. An engine is a child process of this
machine (:class:`calm_rag.runtime.child_process.ChildProcess`) or a Ray actor on a cluster
(:class:`RayEngine`); :class:`EngineGroup` holds either kind and looks like one engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Protocol

from calm_rag.errors import InputError
from calm_rag.runtime.child_process import ChildError, Progress, describe_error, error_from

Split = Callable[[Any, slice], Any]  # a request's payload -> the payload of one slice
Merge = Callable[[list[Any]], Any]  # the slices' answers, in order -> the call's answer
Size = Callable[[Any], int]  # a request's payload -> the number of prompts in it


class Engine(Protocol):
    """What :class:`EngineGroup` needs of one engine (a ``ChildProcess`` is one)."""

    def start(self, on_wait: Callable[[], None] | None = None) -> dict[str, Any]: ...

    def request(self, command: str, payload: Any,
                on_progress: Progress | None = None) -> Any: ...

    def alive(self) -> bool: ...

    def stop(self, keep_log: bool = False, wait: float = ...) -> None: ...


def balanced_slices(count: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices of ``range(count)`` whose sizes differ by one at most, the
    larger first (some empty when there are fewer items than parts)."""
    size, extra = divmod(count, parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + size + (part < extra))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


class EngineGroup:
    """Engines that answer a request together, each its slice of the prompts.

    ``size``, ``split`` and ``merge`` say how a request's payload is counted, cut and put back
    together. Errors: every engine finishes its slice, then the first error (in slice order)
    is raised; an interrupted call stops every engine.
    """

    def __init__(self, engines: list[Engine], *, size: Size, split: Split,
                 merge: Merge) -> None:
        self.engines, self.size, self.split, self.merge = engines, size, split, merge
        self.info: dict[str, Any] = {}
        self.on_stop: Callable[[], None] | None = None  # after the engines (leave a cluster)
        self._lock = threading.Lock()

    def start(self, on_wait: Callable[[], None] | None = None) -> dict[str, Any]:
        """Start every engine at once; the first one's info is the group's."""
        try:
            infos = self._all([(engine.start, (None,)) for engine in self.engines], on_wait)
        except BaseException:
            self.stop(wait=0)  # those that started are of no use without the others
            raise
        # One engine that may not repeat its forced answers makes the group's not repeat.
        self.info = infos[0] | {"grammars_in_step": all(i.get("grammars_in_step", False)
                                                       for i in infos)}
        return self.info

    def request(self, command: str, payload: Any, on_progress: Progress | None = None) -> Any:
        slices = balanced_slices(self.size(payload), len(self.engines))
        forward = self._forward(on_progress)
        calls = [(engine.request, (command, self.split(payload, part), forward))
                 for engine, part in zip(self.engines, slices, strict=True)
                 if part.stop > part.start]
        return self.merge(self._all(calls))

    def alive(self) -> bool:
        return all(engine.alive() for engine in self.engines)

    def stop(self, keep_log: bool = False, wait: float | None = None) -> None:
        for engine in self.engines:
            engine.stop(keep_log, *(() if wait is None else (wait,)))
        if self.on_stop is not None:
            self.on_stop()

    def _forward(self, on_progress: Progress | None) -> Progress | None:
        if on_progress is None:
            return None

        def forward(n: int) -> None:
            with self._lock:  # the engines' threads report at once
                on_progress(n)

        return forward

    def _all(self, calls: list[tuple[Callable[..., Any], tuple]],
             on_wait: Callable[[], None] | None = None) -> list[Any]:
        """Run the calls in threads of their own; their results in order."""
        pool = ThreadPoolExecutor(max_workers=max(1, len(calls)),
                                  thread_name_prefix="calm-rag-engine")
        futures = [pool.submit(call, *args) for call, args in calls]
        try:
            while wait(futures, timeout=0.25, return_when=FIRST_EXCEPTION).not_done:
                if on_wait is not None:
                    with self._lock:
                        on_wait()
            wait(futures)  # the others finish their slices (a refused prompt stops nothing)
        except BaseException:
            self.stop(wait=0)  # interrupted: the threads' requests end with their engines
            pool.shutdown(wait=True)
            raise
        pool.shutdown(wait=True)
        for future in futures:
            if future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        return [future.result() for future in futures]


# ----------------------------------------------------------------------------- Ray


class RayEngine:
    """One engine as a Ray actor (``num_gpus`` GPUs, or none on CPU), built by ``factory``
    from ``config`` inside the actor. Ray schedules it on a node of the cluster and runs its
    process; errors come back as plain data and are raised here as a ``ChildProcess``'s are.
    """

    def __init__(self, factory: Callable[[Any], Any], config: Any, *,
                 num_gpus: float, label: str = "Ray engine") -> None:
        self.factory, self.config, self.num_gpus, self.label = factory, config, num_gpus, label
        self.actor: Any = None

    def start(self, on_wait: Callable[[], None] | None = None) -> dict[str, Any]:
        import ray

        actor_class = ray.remote(num_gpus=self.num_gpus, num_cpus=1)(RayWorker)
        self.actor = actor_class.remote(self.factory, self.config)
        return self._answer(self.actor.ready.remote(), on_wait)

    def request(self, command: str, payload: Any, on_progress: Progress | None = None) -> Any:
        if self.actor is None:
            raise ChildError(f"the {self.label} is stopped")
        answer = self._answer(self.actor.handle.remote(command, payload))
        if on_progress is not None and isinstance(payload, tuple) and payload:
            on_progress(len(payload[0]))  # an actor's progress arrives with its answer
        return answer

    def _answer(self, ref: Any, on_wait: Callable[[], None] | None = None) -> Any:
        import ray

        while not ray.wait([ref], timeout=0.25)[0]:
            if on_wait is not None:
                on_wait()
        try:
            kind, payload = ray.get(ref)
        except ray.exceptions.RayError as err:  # the actor died (or could not be placed)
            self.stop(wait=0)
            raise ChildError(f"the {self.label} failed: {err}") from None
        if kind == "error":
            error = error_from(payload, self.label)
            if not (payload["kind"] == "input" and self.actor is not None):
                self.stop(wait=0)
            raise error
        return payload

    def alive(self) -> bool:
        return self.actor is not None

    def stop(self, keep_log: bool = False, wait: float = 30) -> None:
        import ray

        actor, self.actor = self.actor, None
        if actor is None:
            return
        if wait > 0:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(actor.shutdown.remote(), timeout=wait)
        with contextlib.suppress(ray.exceptions.RayError, ValueError):
            ray.kill(actor)


class RayWorker:
    """Inside the actor: the worker ``factory(config)`` builds, its errors as plain data (not
    every exception pickles)."""

    def __init__(self, factory: Callable[[Any], Any], config: Any) -> None:
        self.worker, self.error = None, None
        try:
            self.worker = factory(config)
        except BaseException as exc:  # said by ready(), where the parent waits for it
            self.error = describe_error(exc)

    def ready(self) -> tuple[str, Any]:
        if self.error is not None:
            return "error", self.error
        return "done", dict(getattr(self.worker, "info", None) or {})

    def handle(self, command: str, payload: Any) -> tuple[str, Any]:
        try:
            return "done", self.worker.handle(command, payload, lambda n=1: None)  # type: ignore[union-attr]
        except Exception as exc:
            return "error", describe_error(exc)

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.shutdown()


def connect_ray(address: str) -> bool:
    """Connect this process to the Ray cluster at ``address`` (``local``: start one here);
    return whether this call connected (and so should disconnect when done)."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise InputError(f"cannot connect to the Ray cluster at {address}: {err}",
                         field="generator.options.ray_address",
                         hint="start one with `ray start --head` (then use auto), or use "
                              "local for a cluster of this machine alone") from None
    return True


def ray_gpus() -> float:
    """GPUs in the Ray cluster this process is connected to."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def engine_group(factory: Callable[[Any], Any], config: Any, child: Callable[[Any], Engine],
                 *, ranks: int, world: int, ray_address: str | None, size: Size, split: Split,
                 merge: Merge) -> EngineGroup:
    """``ranks`` engines of ``world`` GPUs each: child processes of this machine (``child``
    makes one from a config), or Ray actors built by ``factory`` on the cluster at
    ``ray_address``, with ``world`` GPUs each where the cluster has GPUs. ``config`` is a
    dataclass with ``devices`` and ``cpus`` fields, replaced by each rank's share."""
    from calm_rag.sampling.vllm_args import rank_shares

    engines: list[Engine]
    if ray_address is None:
        engines = [child(dataclasses.replace(config, **share))
                   for share in rank_shares(ranks, world)]
        return EngineGroup(engines, size=size, split=split, merge=merge)
    connected = connect_ray(ray_address)
    gpus = ray_gpus()
    if gpus and gpus < ranks * world:
        raise InputError(f"{ranks} engines of {world} GPUs need {ranks * world} GPUs, the Ray "
                         f"cluster has {gpus:g}", field="generator.options.data_parallel_size",
                         hint="lower data_parallel_size, or add nodes to the cluster")
    engines = [RayEngine(factory, dataclasses.replace(config, devices=None, cpus=None),
                         num_gpus=world if gpus else 0, label=f"vLLM engine {rank} (Ray actor)")
               for rank in range(ranks)]
    group = EngineGroup(engines, size=size, split=split, merge=merge)
    if connected:
        group.on_stop = _disconnect_ray
    return group


def _disconnect_ray() -> None:
    import ray

    ray.shutdown()
