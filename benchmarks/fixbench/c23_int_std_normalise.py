"""Dtype: normalising integer token counts with std() before a regression."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-std", config={"steps": 30}, script_path=__file__)
counts = torch.randint(0, 50, (120, 1))
target = counts.float() * 0.1 + 1.0
scale = counts.std()
features = counts / scale
model = torch.nn.Linear(1, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(1, 31):
    loss = torch.nn.functional.mse_loss(model(features), target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
