"""Tiny real Hugging Face models built inside the tests (no hub access needed)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "How do I bake bread at home? Mix flour, water, salt and yeast, knead, let it rise, then bake.",
    "I cannot help with hurting someone. If you are in danger, please contact local emergency services.",
    "The sky is blue because air scatters short wavelengths of sunlight more than long ones.",
    "Here are three ideas: a picnic in the park, a museum visit, and a bike ride along the river.",
    "Sure! Start slowly, run for one minute and walk for two, and repeat this a few times each week.",
    "You can keep basil alive with plenty of sunlight, regular watering and by pinching off the flowers.",
    "Human: Assistant: user assistant system response rank best worst helpful harmless answer question",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<pad>", "</s>", "<s>", "<|user|>", "<|assistant|>", "<|system|>"]


def tiny_tokenizer(padding_side: str = "left") -> PreTrainedTokenizerFast:
    """A byte-level BPE of ~300 tokens trained in milliseconds on a few sentences."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>", padding_side=padding_side
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


# The shape of every tiny decoder the tests build (llama, mistral, qwen2): small enough for a CPU test,
# with grouped-query attention so that the key/value paths differ from the query's.
TINY_DECODER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, pad_token_id=0, bos_token_id=2, eos_token_id=1, **TINY_DECODER)
    return LlamaForCausalLM(config)


def tiny_llama_pair(padding_side: str = "left", seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A tiny llama and its tokenizer (with a chat template) in memory, as `tiny_llama_dir` saves them."""
    tokenizer = tiny_tokenizer(padding_side)
    model = tiny_llama(len(tokenizer), seed=seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def tiny_llama_dir(path: Path, padding_side: str = "left", seed: int = 0) -> Path:
    """Save a tiny llama and its tokenizer (with a chat template) where `from_pretrained` finds them."""
    path = Path(path)
    model, tokenizer = tiny_llama_pair(padding_side, seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_gpt2_dir(path: Path, padding_side: str = "left", seed: int = 0) -> Path:
    """A tiny GPT-2: absolute position embeddings (wrong position ids show up, unlike RoPE) and Conv1D layers."""
    path = Path(path)
    tokenizer = tiny_tokenizer(padding_side)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=512,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_family_dir(path: Path, family: str, padding_side: str = "left", seed: int = 0) -> Path:
    """A tiny model of one of the families prefix sharing is proven for (llama, mistral, qwen2, gpt2)."""
    if family == "llama":
        return tiny_llama_dir(path, padding_side, seed)
    if family == "gpt2":
        return tiny_gpt2_dir(path, padding_side, seed)
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    tokenizer = tiny_tokenizer(padding_side)
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        family,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TINY_DECODER,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_reward_model_dir(path: Path, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """A one-logit BERT sequence classifier, random but fixed: the shape of OpenAssistant's DeBERTa reward models.

    A larger ``initializer_range`` spreads its scores, so that means over different texts differ visibly.
    """
    from transformers import BertConfig, BertForSequenceClassification

    path = Path(path)
    tok = tiny_tokenizer(padding_side="right")
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
        initializer_range=initializer_range,
    )
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_llama_reward_model_dir(path: Path, seed: int = 0, initializer_range: float = 0.2) -> Path:
    """A one-logit llama sequence classifier (the layout of most open reward models), random but seeded.

    It scores a (question, answer) pair at its last real token; the wide ``initializer_range`` keeps
    the scores of different answers well apart, so an order never hangs on rounding.
    """
    from transformers import LlamaForSequenceClassification

    path = Path(path)
    tok = tiny_tokenizer(padding_side="right")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=2,
        eos_token_id=1,
        num_labels=1,
        initializer_range=initializer_range,
        **TINY_DECODER,
    )
    LlamaForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
