"""Dtype: accuracy as the mean of an integer tensor."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-clf", config={"steps": 30}, script_path=__file__)
X = torch.randn(200, 5)
labels = (X[:, 0] + X[:, 1] > 0).long()
model = torch.nn.Linear(5, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.5)
for step in range(1, 31):
    logits = model(X)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    correct = (logits.argmax(dim=1) == labels).long()
    accuracy = correct.mean()
    rt.log_metrics(step=step, loss=loss.item(), accuracy=accuracy.item())
print(f"CHECK {accuracy.item():.6f} {loss.item():.6f}", flush=True)
rt.finish()
