"""Align methods by name (``align.method``): what rows a method trains on, how it trains, and
what it can do.

A new method is one subclass of :class:`AlignMethod` decorated with
``@ALIGN_METHODS.register("name")``, in a plugin file for instance::

    @ALIGN_METHODS.register("chosen-sft")
    class ChosenSFT(AlignMethod[PreferencePair]):
        trl_config = "SFTConfig"

        @classmethod
        def rows(cls, samples, votes, pairs): return pairs

        @classmethod
        def train(cls, model_path, rows, config, out_dir, adapter=None):
            trl_rows = [...]  # prompt/completion rows
            return run_training("chosen-sft", model_path, trl_rows, config, out_dir,
                                sft_trainer(config, trl_rows), adapter)

The rest of calm_rag asks the class what it can do (its TRL config, whether a launcher's
ranks can rebuild it), never its name.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from calm_rag.records import PreferencePair, Sample, Vote
from calm_rag.registries import ALIGN_METHODS
from calm_rag.training.common import MakeTrainer, TrainResult
from calm_rag.training.config import AlignConfig

if TYPE_CHECKING:
    from calm_rag.training.dco import DcoQuestion
    from calm_rag.training.dco_gold import GoldQuestion


class TrainingRow(Protocol):
    """What an align method trains on: a record whose plain values key the align stage."""

    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=TrainingRow)


class AlignMethod(ABC, Generic[R]):
    """One way of training the policy on the outcome of the vote (rows of type ``R``)."""

    trl_config: ClassVar[str]
    """The name of the TRL config class (in ``trl``) the trainer takes: ``align.trainer``
    may set its fields."""
    own_keys: ClassVar[str | None] = None
    """The ``align:`` group of keys only this method reads (``dco`` for ``align.dco.*``):
    the group enters the align stage's key when this method trains, and only then."""
    launchable: ClassVar[bool] = False
    """Whether ``align.launcher`` ranks can rebuild the trainer by the method's name
    (:meth:`trainer`). The ranks import calm_rag's own methods only: a method of a plugin
    file trains in the pipeline's process."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _abstract(cls):
            return
        if not isinstance(getattr(cls, "trl_config", None), str):
            raise TypeError(f"align method {cls.__qualname__} must name its TRL config class, "
                            "e.g. trl_config = 'DPOConfig'")
        if cls.launchable and not _defines(cls, "trainer"):
            raise TypeError(f"align method {cls.__qualname__} is launchable but defines no "
                            "trainer() for the ranks to rebuild")

    @classmethod
    @abstractmethod
    def rows(cls, samples: list[Sample], votes: list[Vote],
             pairs: list[PreferencePair]) -> list[R]:
        """The training rows, from the samples, the target votes and their pairs."""

    @classmethod
    @abstractmethod
    def train(cls, model_path: str | Path, rows: list[R], config: AlignConfig, out_dir: Path,
              adapter: str | None = None) -> TrainResult:
        """Train on ``rows`` (going on from ``adapter`` when given, a previous round's); write
        the adapter, ``train_log.json`` and ``loss.png`` (``merged/`` with ``align.merge``)
        into ``out_dir`` and return them as :meth:`TrainResult.load` reads them back."""

    @classmethod
    def trainer(cls, config: AlignConfig, rows: list[dict[str, Any]]) -> MakeTrainer:
        """What builds the TRL trainer for ``rows`` (TRL's rows, as written for the ranks) in
        a launched rank; a launchable method defines it."""
        raise NotImplementedError(f"{cls.__qualname__} cannot run under a launcher")


def _abstract(cls: type) -> bool:
    """Whether ``cls`` leaves an abstract method undefined (ABCMeta says so only after
    ``__init_subclass__`` has run)."""
    return any(getattr(inspect.getattr_static(cls, name), "__isabstractmethod__", False)
               for name in dir(cls))


def _defines(cls: type, name: str) -> bool:
    """Whether ``cls`` or a base below :class:`AlignMethod` defines ``name``."""
    below = cls.__mro__[: cls.__mro__.index(AlignMethod)]
    return any(name in vars(base) for base in below)


@ALIGN_METHODS.register("dpo")
class DPO(AlignMethod[PreferencePair]):
    """DPO (TRL) with a LoRA adapter on the preference pairs."""

    trl_config = "DPOConfig"
    launchable = True

    @classmethod
    def rows(cls, samples: list[Sample], votes: list[Vote],
             pairs: list[PreferencePair]) -> list[PreferencePair]:
        return list(pairs)

    @classmethod
    def train(cls, model_path: str | Path, rows: list[PreferencePair], config: AlignConfig,
              out_dir: Path, adapter: str | None = None) -> TrainResult:
        from calm_rag.training.dpo import train_dpo

        return train_dpo(model_path, rows, config, out_dir, adapter)

    @classmethod
    def trainer(cls, config: AlignConfig, rows: list[dict[str, Any]]) -> MakeTrainer:
        from calm_rag.training.dpo import dpo_trainer

        return dpo_trainer(config, rows)


@ALIGN_METHODS.register("sft")
class SFT(AlignMethod[Sample]):
    """Supervised fine-tuning on the responses that agree with the target (CALM's baseline)."""

    trl_config = "SFTConfig"
    launchable = True

    @classmethod
    def rows(cls, samples: list[Sample], votes: list[Vote],
             pairs: list[PreferencePair]) -> list[Sample]:
        from calm_rag.training.sft import sft_targets

        return sft_targets(samples, votes)

    @classmethod
    def train(cls, model_path: str | Path, rows: list[Sample], config: AlignConfig,
              out_dir: Path, adapter: str | None = None) -> TrainResult:
        from calm_rag.training.sft import train_sft

        return train_sft(model_path, rows, config, out_dir, adapter)

    @classmethod
    def trainer(cls, config: AlignConfig, rows: list[dict[str, Any]]) -> MakeTrainer:
        from calm_rag.training.sft import sft_trainer

        return sft_trainer(config, rows)


@ALIGN_METHODS.register("dco")
class DCO(AlignMethod["DcoQuestion"]):
    """Direct Consistency Optimization (TRL's DPOTrainer, DCO's loss, a LoRA adapter): each
    language's preference between two answers follows the other language's reference
    preference (``align.dco.*``)."""

    trl_config = "DPOConfig"
    own_keys = "dco"
    launchable = True

    @classmethod
    def rows(cls, samples: list[Sample], votes: list[Vote],
             pairs: list[PreferencePair]) -> list[DcoQuestion]:
        """One record a question and setting; ``align.dco`` turns them into rows when it
        trains (``rows`` is not given the config)."""
        from calm_rag.training.dco import dco_questions

        return dco_questions(samples, votes, pairs)

    @classmethod
    def train(cls, model_path: str | Path, rows: list[DcoQuestion], config: AlignConfig,
              out_dir: Path, adapter: str | None = None) -> TrainResult:
        from calm_rag.training.dco import train_dco

        return train_dco(model_path, rows, config, out_dir, adapter)

    @classmethod
    def trainer(cls, config: AlignConfig, rows: list[dict[str, Any]]) -> MakeTrainer:
        from calm_rag.training.dco import dco_trainer

        return dco_trainer(config, rows)


@ALIGN_METHODS.register("gold-dpo-dco")
class GoldDpoDCO(AlignMethod["GoldQuestion"]):
    """DCO plus DPO on gold labels, summed in one loss on DCO's rows: where a row compares
    the question's gold answer, DPO's loss on each language's pair is added (weight
    ``align.dco.gold_dpo``, β ``align.beta``). Refused where the questions have no answers."""

    trl_config = "DPOConfig"
    own_keys = "dco"
    launchable = True

    @classmethod
    def rows(cls, samples: list[Sample], votes: list[Vote],
             pairs: list[PreferencePair]) -> list[GoldQuestion]:
        from calm_rag.training.dco_gold import gold_questions

        return gold_questions(samples, votes, pairs)

    @classmethod
    def train(cls, model_path: str | Path, rows: list[GoldQuestion], config: AlignConfig,
              out_dir: Path, adapter: str | None = None) -> TrainResult:
        from calm_rag.training.dco_gold import train_gold_dco

        return train_gold_dco(model_path, rows, config, out_dir, adapter)

    @classmethod
    def trainer(cls, config: AlignConfig, rows: list[dict[str, Any]]) -> MakeTrainer:
        from calm_rag.training.dco_gold import gold_dco_trainer

        return gold_dco_trainer(config, rows)
