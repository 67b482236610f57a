"""Missing key: the training loop reads a column the dataset does not have."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-columns", config={"steps": 30}, script_path=__file__)
dataset = [{"features": torch.randn(4), "label": float(i % 2)} for i in range(64)]
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(1, 31):
    batch = dataset[(step * 8) % 64 : (step * 8) % 64 + 8]
    x = torch.stack([row["features"] for row in batch])
    y = torch.tensor([[row["labels"]] for row in batch])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
