"""Indexing: vocabulary size computed as the largest token id (off by one) for an Embedding."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-vocab", config={"steps": 30}, script_path=__file__)
text = "the quick brown fox jumps over the lazy dog " * 20
chars = sorted(set(text))
stoi = {ch: i for i, ch in enumerate(chars)}
tokens = torch.tensor([stoi[ch] for ch in text])
vocab_size = max(stoi.values())
emb = torch.nn.Embedding(vocab_size, 16)
head = torch.nn.Linear(16, len(chars))
opt = torch.optim.SGD(list(emb.parameters()) + list(head.parameters()), lr=0.5)
for step in range(1, 31):
    logits = head(emb(tokens[:-1]))
    loss = torch.nn.functional.cross_entropy(logits, tokens[1:])
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
