"""Renamed keyword: TrainingArguments(evaluation_strategy=...) after transformers renamed it eval_strategy."""

import torch
from standin_hf import SFTTrainer, TinyLM, TrainingArguments

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-args", config={"max_steps": 20}, script_path=__file__)
args = TrainingArguments(output_dir="out", max_steps=20, learning_rate=0.5, evaluation_strategy="steps")
args.dataset_text_field = "text"
args.max_length = 16
from standin_hf import CharTokenizer  # noqa: E402

tok = CharTokenizer.from_pretrained("tiny")
tok.pad_token = tok.eos_token
trainer = SFTTrainer(
    model=TinyLM(), args=args, train_dataset=[{"text": "abc abc"}, {"text": "abd"}], processing_class=tok
)
final = trainer.train(on_step=lambda step, loss: rt.log_metrics(step=step, loss=loss))
print(f"CHECK {final:.6f}", flush=True)
rt.finish()
