"""Autograd: a recurrent state carried across steps without detaching (truncated BPTT)."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-rnn", config={"steps": 30}, script_path=__file__)
cell = torch.nn.RNNCell(4, 8)
head = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(list(cell.parameters()) + list(head.parameters()), lr=0.05)
seq = torch.randn(31, 2, 4)
h = torch.zeros(2, 8)
for step in range(1, 31):
    h = cell(seq[step - 1], h)
    loss = ((head(h) - seq[step, :, :1]) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
