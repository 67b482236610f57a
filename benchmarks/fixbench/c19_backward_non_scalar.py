"""Reduction: backward() on a per-sample loss vector."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-reduce", config={"steps": 30}, script_path=__file__)
X = torch.randn(64, 3)
y = X @ torch.tensor([[0.5], [-1.0], [2.0]])
model = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(1, 31):
    per_sample = (model(X) - y).pow(2).squeeze(1)
    loss = per_sample
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.mean().item())
print(f"CHECK {loss.mean().item():.6f}", flush=True)
rt.finish()
