"""Autograd: .numpy() on predictions that require grad, for a metric."""

import numpy as np
import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-metric", config={"steps": 30}, script_path=__file__)
X = torch.randn(100, 3)
y = X.sum(dim=1, keepdim=True)
model = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(1, 31):
    pred = model(X)
    loss = torch.nn.functional.mse_loss(pred, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    mae = float(np.abs(pred.numpy() - y.numpy()).mean())
    rt.log_metrics(step=step, loss=loss.item(), mae=mae)
print(f"CHECK {mae:.6f}", flush=True)
rt.finish()
