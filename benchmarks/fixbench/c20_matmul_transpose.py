"""Shape: a hand-written linear layer multiplies by W (out, in) without transposing it."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-matmul", config={"steps": 30}, script_path=__file__)
X = torch.randn(50, 6)
y = torch.randn(50, 2)
W = torch.nn.Parameter(torch.randn(2, 6) * 0.1)  # (out_features, in_features), like nn.Linear
b = torch.nn.Parameter(torch.zeros(2))
opt = torch.optim.SGD([W, b], lr=0.1)
for step in range(1, 31):
    pred = X @ W + b
    loss = ((pred - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
