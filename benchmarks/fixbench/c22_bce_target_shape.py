"""Shape: BCE-with-logits on (N, 1) logits against (N,) targets."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-bce", config={"steps": 30}, script_path=__file__)
X = torch.randn(80, 4)
y = (X[:, 0] > 0).float()
model = torch.nn.Linear(4, 1)
criterion = torch.nn.BCEWithLogitsLoss()
opt = torch.optim.SGD(model.parameters(), lr=0.5)
for step in range(1, 31):
    logits = model(X)
    loss = criterion(logits, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
