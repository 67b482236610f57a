"""Moved keyword: dataset_text_field passed to SFTTrainer after TRL moved it into SFTConfig."""

import torch
from standin_hf import CharTokenizer, SFTConfig, SFTTrainer, TinyLM

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-sftconfig", config={"max_steps": 20}, script_path=__file__)
tok = CharTokenizer.from_pretrained("tiny")
tok.pad_token = tok.eos_token
dataset = [{"content": "one two three"}, {"content": "four five"}]
config = SFTConfig(output_dir="out", max_steps=20, learning_rate=0.5)
trainer = SFTTrainer(
    model=TinyLM(),
    args=config,
    train_dataset=dataset,
    processing_class=tok,
    dataset_text_field="content",
)
final = trainer.train(on_step=lambda step, loss: rt.log_metrics(step=step, loss=loss))
print(f"CHECK {final:.6f}", flush=True)
rt.finish()
