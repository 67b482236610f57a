"""Off-by-one: a loop over samples that starts at 1 and runs one past the end."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-loop", config={"epochs": 3}, script_path=__file__)
X = torch.randn(20, 3)
y = X @ torch.tensor([[1.0], [2.0], [-1.0]])
w = torch.zeros(3, 1, requires_grad=True)
step = 0
for _epoch in range(3):
    for i in range(1, len(X) + 1):
        xi, yi = X[i], y[i]
        loss = ((xi @ w - yi) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= 0.05 * w.grad
            w.grad.zero_()
        step += 1
        rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {w.sum().item():.6f}", flush=True)
rt.finish()
