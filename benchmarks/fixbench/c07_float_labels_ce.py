"""Dtype: class labels stored as floats passed to cross_entropy."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-labels", config={"steps": 30}, script_path=__file__)
X = torch.randn(150, 4)
labels = torch.tensor([float(i % 3) for i in range(150)])
X = X + labels.unsqueeze(1)
model = torch.nn.Linear(4, 3)
opt = torch.optim.SGD(model.parameters(), lr=0.3)
for step in range(1, 31):
    loss = torch.nn.functional.nll_loss(torch.log_softmax(model(X), dim=1), labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
