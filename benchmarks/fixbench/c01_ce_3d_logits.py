"""Shape: per-token logits (B, T, V) passed to cross_entropy unflattened."""

import torch
import torch.nn.functional as F

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
B, T, V = 8, 12, 20
rt = TrainingRuntime()
rt.start(model_id="fixbench-bigram", config={"steps": 40}, script_path=__file__)
data = torch.randint(0, V, (2000,))
emb = torch.nn.Embedding(V, V)
opt = torch.optim.SGD(emb.parameters(), lr=0.5)
for step in range(1, 41):
    ix = torch.randint(0, len(data) - T - 1, (B,))
    x = torch.stack([data[i : i + T] for i in ix])
    y = torch.stack([data[i + 1 : i + T + 1] for i in ix])
    logits = emb(x)
    loss = F.cross_entropy(logits, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
