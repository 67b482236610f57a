"""Renamed keyword: SFTTrainer(tokenizer=...) after TRL renamed it processing_class."""

import torch
from standin_hf import CharTokenizer, SFTConfig, SFTTrainer, TinyLM

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-sft", config={"max_steps": 20}, script_path=__file__)
tokenizer = CharTokenizer.from_pretrained("tiny")
tokenizer.pad_token = tokenizer.eos_token
dataset = [{"text": "hello world"}, {"text": "fix the crash"}, {"text": "small models"}]
trainer = SFTTrainer(
    model=TinyLM(),
    args=SFTConfig(output_dir="out", max_steps=20, learning_rate=0.5),
    train_dataset=dataset,
    tokenizer=tokenizer,
)
final = trainer.train(on_step=lambda step, loss: rt.log_metrics(step=step, loss=loss))
print(f"CHECK {final:.6f}", flush=True)
rt.finish()
