"""Shape: two feature blocks concatenated along the batch dimension instead of the feature one."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-concat", config={"steps": 40}, script_path=__file__)
numeric = torch.randn(128, 6)
onehot = torch.nn.functional.one_hot(torch.randint(0, 4, (128,)), 4).float()
target = numeric.sum(dim=1, keepdim=True)
model = torch.nn.Linear(10, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for step in range(1, 41):
    features = torch.cat([numeric, onehot], dim=0)
    loss = torch.nn.functional.mse_loss(model(features), target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
