"""Whether a tracker ``align.report_to`` names can log at all, asked when the config loads.

The trainer's callbacks (transformers' ``WandbCallback``, ``MLflowCallback``) meet their
tracker only when the training starts, after hours of sampling: a W&B without credentials or
an MLflow store that cannot open would stop the run there. Each check asks the library the
way its callback will, with the same environment variables, and raises a one-line
:class:`InputError` instead. A tracker without a check here needs nothing but its package.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from calm_rag.errors import InputError

WANDB_LOCAL_MODES = ("offline", "dryrun", "disabled")
"""W&B modes that need no account (``offline``: ``wandb sync`` uploads later)."""


def check_wandb(trainer: Mapping[str, Any]) -> None:
    """W&B logs offline (``WANDB_MODE``, or ``wandb offline``'s settings) or has credentials
    (``WANDB_API_KEY``, ``wandb login``'s netrc): otherwise ``wandb.init`` prompts on a
    terminal and raises without one. Never switched to offline behind the user's back: the
    run would look tracked and reach no dashboard."""
    from wandb.errors import AuthenticationError
    from wandb.sdk import wandb_setup
    from wandb.sdk.lib import wbauth

    settings = wandb_setup.singleton().settings  # env and settings files; starts no service
    if settings.mode in WANDB_LOCAL_MODES:
        return
    try:
        auth = wbauth.authenticate_session(host=wbauth.HostUrl(settings.base_url),
                                           source="calm_rag", prompt=False, verify=False,
                                           update_session=False)
    except AuthenticationError as err:
        raise InputError(f"'wandb': {err}", field="report_to",
                         hint="fix WANDB_API_KEY, or export WANDB_MODE=offline") from None
    if auth is None:
        raise InputError(f"'wandb' has no API key for {settings.base_url} and WANDB_MODE is "
                         f"{settings.mode!r}: the training would stop when it starts",
                         field="report_to",
                         hint="wandb login (or WANDB_API_KEY=...), or export WANDB_MODE=offline "
                              "to log locally and `wandb sync` later")


def check_mlflow(trainer: Mapping[str, Any]) -> None:
    """MLflow's tracking store opens, as ``MLFLOW_TRACKING_URI`` (or MLflow's default) names it.

    With mlflow-skinny alone the default ``sqlite:///mlflow.db`` lacks its database packages,
    and MLflow 3 refuses a ``file:`` store unless ``MLFLOW_ALLOW_FILE_STORE=true``. The client
    opens its store when made (a server's store makes no request until used)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient()
    except (MlflowException, ImportError) as err:
        first = str(err).split(". ")[0]
        raise InputError(f"'mlflow' cannot open its tracking store "
                         f"{mlflow.get_tracking_uri()}: {first}", field="report_to",
                         hint="set MLFLOW_TRACKING_URI to a server (http://...), or "
                              "pip install mlflow for its sqlite store, or "
                              "MLFLOW_TRACKING_URI=file:./mlruns with MLFLOW_ALLOW_FILE_STORE=true"
                         ) from None


def trackio_space(trainer: Mapping[str, Any]) -> str | None:
    """The Space Trackio logs to, as ``TrackioCallback`` resolves it (``align.trainer``'s
    ``trackio_space_id``, else ``TRACKIO_SPACE_ID``); None: the local store."""
    return trainer.get("trackio_space_id") or os.environ.get("TRACKIO_SPACE_ID") or None


def check_trackio(trainer: Mapping[str, Any]) -> None:
    """Trackio's local store needs nothing; a Space needs a Hugging Face token."""
    from huggingface_hub import get_token

    if (space := trackio_space(trainer)) and get_token() is None:
        raise InputError(f"'trackio' logs to the Space {space}, and no Hugging Face token is "
                         "set", field="report_to",
                         hint="hf auth login (or HF_TOKEN=...), or unset TRACKIO_SPACE_ID to "
                              "log to the local store")


TRACKER_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "wandb": check_wandb, "mlflow": check_mlflow, "trackio": check_trackio}
"""Tracker name → its check that it can log (given ``align.trainer``), beyond its package."""
