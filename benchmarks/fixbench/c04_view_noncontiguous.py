"""Strides: .view() on a transposed (non-contiguous) tensor."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
B, T, H = 4, 10, 8
rt = TrainingRuntime()
rt.start(model_id="fixbench-seq", config={"steps": 30}, script_path=__file__)
x = torch.randn(B, T, H)
y = torch.randn(B * T, 1)
proj = torch.nn.Linear(H, 1)
opt = torch.optim.SGD(proj.parameters(), lr=0.05)
for step in range(1, 31):
    h = x.transpose(0, 1)  # time-major, as the original RNN code wanted
    flat = h.view(-1, H)
    loss = torch.nn.functional.mse_loss(proj(flat), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
