"""Sampling: prompts in the question's language, pluggable generator backends, the stage.

>>> sampler = make_sampler("hf", {"batch_size": 8}, model="smollm2-135m-instruct")
>>> samples = sample_questions(questions, sampler, SamplingParams(n=3))
"""

from calm_rag.sampling import hf as _hf  # noqa: F401  (registers the "hf" backend)
from calm_rag.sampling import openai_backend as _openai  # noqa: F401
from calm_rag.sampling import vllm_backend as _vllm  # noqa: F401
from calm_rag.sampling.base import SAMPLERS, Messages, Sampler, make_sampler, sampler_class
from calm_rag.sampling.chat import encode_chat, recorded_chat
from calm_rag.sampling.hf import HFOptions, HFSampler
from calm_rag.sampling.letter_scores import LetterScorer, fill_unanswered
from calm_rag.sampling.openai_backend import OpenAIOptions, OpenAISampler
from calm_rag.sampling.params import SamplingParams
from calm_rag.sampling.prompts import build_messages, messages_from_fields, prompt_fields
from calm_rag.sampling.stage import sample_questions
from calm_rag.sampling.vllm_backend import VLLMOptions, VLLMSampler

__all__ = [
    "SAMPLERS",
    "HFOptions",
    "HFSampler",
    "LetterScorer",
    "Messages",
    "OpenAIOptions",
    "OpenAISampler",
    "Sampler",
    "SamplingParams",
    "VLLMOptions",
    "VLLMSampler",
    "build_messages",
    "encode_chat",
    "fill_unanswered",
    "make_sampler",
    "messages_from_fields",
    "prompt_fields",
    "recorded_chat",
    "sample_questions",
    "sampler_class",
]
