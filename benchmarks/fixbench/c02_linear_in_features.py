"""Shape: a Linear layer sized for 10 input features while the data has 12."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
N_FEATURES = 12
rt = TrainingRuntime()
rt.start(model_id="fixbench-mlp", config={"steps": 40}, script_path=__file__)
X = torch.randn(256, N_FEATURES)
y = X @ torch.randn(N_FEATURES, 1) + 0.1 * torch.randn(256, 1)
model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(1, 41):
    pred = model(X)
    loss = torch.nn.functional.mse_loss(pred, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
