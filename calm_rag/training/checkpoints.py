"""Training checkpoints that survive a kill, and which of them a resumed run may trust.

The Trainer writes a checkpoint from every rank without waiting for the others: rank 0 writes
the weights, optimizer and ``trainer_state.json``, while each other rank writes its own
``rng_state_N.pth`` whenever it gets there. A kill in between leaves a checkpoint that looks
complete to rank 0 but holds a half-written file of another rank, and resuming from it fails
in that rank. So once every rank has saved, the rank that writes checkpoints seals it with one
small file, and only sealed checkpoints are resumed from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calm_rag.io import write_json

SEAL = "calm_rag_sealed.json"  # written last, once every rank has saved


def checkpoint_folder(out_dir: Path) -> Path:
    """Beside the output folder (not in its staging copy, which a kill throws away)."""
    return out_dir.parent / f"{out_dir.name}.checkpoints"


def last_checkpoint(folder: Path) -> Path | None:
    """The newest sealed ``checkpoint-N``."""
    done = [p for p in folder.glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit() and (p / SEAL).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def sealing_callback(trainer: Any) -> Any:
    """A Trainer callback that seals each checkpoint once all of ``trainer``'s ranks saved."""
    from transformers import TrainerCallback

    class SealCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            trainer.accelerator.wait_for_everyone()  # every rank's files are written
            if args.should_save:  # rank 0, or each node's first with save_on_each_node
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                write_json(folder / SEAL, {"step": state.global_step,
                                           "processes": args.world_size})
            return control

    return SealCheckpoints()
