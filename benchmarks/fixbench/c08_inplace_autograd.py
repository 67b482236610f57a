"""Autograd: an in-place update of a tensor that sigmoid's backward still needs."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-inplace", config={"steps": 30}, script_path=__file__)
X = torch.randn(64, 3)
y = torch.randn(64, 1)
layer = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(layer.parameters(), lr=0.1)
for step in range(1, 31):
    gate = torch.sigmoid(layer(X))
    gate += 0.5
    loss = ((gate - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
