"""Test material for the recipe tests: datasets written on the spot and a tiny random causal LM.

The model is a 2-layer Llama built from a config (random weights, ~30k parameters) with a small
byte-level BPE tokenizer trained here from the test sentences by the `tokenizers` package: everything
offline, and a step takes milliseconds on one CPU thread, so the real recipe scripts run unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

SFT_ROWS = [
    {"prompt": f"What is {a} plus {b}?", "completion": f"{a} plus {b} is {a + b}."}
    for a in range(1, 7)
    for b in range(1, 5)
]
CHAT_ROWS = [
    {"messages": [{"role": "user", "content": f"Say {w}"}, {"role": "assistant", "content": f"{w}!"}]}
    for w in ("hello", "thanks", "yes", "no", "maybe", "goodbye")
]
GRPO_ROWS = [
    {
        "question": f"Tom has {a} apples and buys {b} more. How many apples?",
        "answer": f"{a} + {b}\n#### {a + b}",
    }
    for a in range(16)
    for b in range(16)
]
"""gsm8k-shaped rows; answers span 0-30 like the mock sampler's token ids, so its completions sometimes hit."""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_causal_lm(folder: Path, vocab_size: int = 400) -> Path:
    """Save a random 2-layer Llama and its tokenizer to `folder` (from_pretrained loads it offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [json.dumps(r) for r in SFT_ROWS + CHAT_ROWS + GRPO_ROWS] + ["user: assistant: #### \\boxed{}"]
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=True,
    )
    import torch

    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def start_recipe_run(controller, run_id: str, recipe: str, params: dict):
    """Render `recipe` and start it as run `run_id` (what start_training with a recipe does); the rendering."""
    from twinkle_auto.recipes import render_recipe

    rendered = render_recipe(recipe, params)
    controller.start(run_id, rendered.script, model_id=rendered.model_id, config=rendered.params)
    return rendered
