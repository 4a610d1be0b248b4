"""A tiny causal LM built in the test: a 2-layer Llama (hidden size 32) with a byte-level BPE
tokenizer trained on a few lines and a chat template. It builds and loads in well under a
second, so tests exercise real ``transformers`` (and vLLM, TRL) code on it.

>>> folder = build_tiny_model(tmp_path / "tiny-llama")
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
CORPUS = [
    "Question: Where is milk kept? Answer: B. refrigerator",
    "Explanation: milk spoils quickly when it is warm.",
    "问题: 牛奶应该放在哪里？ 答案: B",
    "Réponse: la bonne réponse est C. Erklärung: Antwort: A",
    "質問: 牛乳はどこに保管すべきですか？ 答え: B",
]


def build_tiny_model(folder: Path, seed: int = 0, init_range: float = 0.02) -> Path:
    """Save a randomly initialised 2-layer Llama, its tokenizer and chat template to ``folder``.

    The same ``seed`` gives the same weights (the tokenizer is deterministic anyway). A larger
    ``init_range`` (the weights' standard deviation) makes the output depend more on the
    context, so its answers disagree across prompts, as a real model's do.
    """
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=init_range)
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder
