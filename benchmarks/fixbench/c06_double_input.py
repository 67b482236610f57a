"""Dtype: float64 features (as numpy makes them) fed to a float32 model."""

import numpy as np
import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-np", config={"steps": 30}, script_path=__file__)
rng = np.random.default_rng(0)
features = rng.normal(size=(128, 4))
targets = features @ np.array([[1.0], [-2.0], [0.5], [3.0]])
X = torch.from_numpy(features)
y = torch.from_numpy(targets).float()
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for step in range(1, 31):
    loss = torch.nn.functional.mse_loss(model(X), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
