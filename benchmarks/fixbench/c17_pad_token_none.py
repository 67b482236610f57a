"""Missing pad token: batching padded sequences with a tokenizer that has none."""

import torch
from standin_hf import CharTokenizer, TinyLM

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-pad", config={"steps": 20}, script_path=__file__)
tokenizer = CharTokenizer.from_pretrained("tiny")
texts = ["short", "a longer line", "mid size"]
model = TinyLM()
opt = torch.optim.SGD(model.parameters(), lr=0.5)
for step in range(1, 21):
    ids = tokenizer(texts, padding=True)["input_ids"]
    logits = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), ids[:, 1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
