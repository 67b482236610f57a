"""Device: a causal mask built on a hard-coded device ("meta" stands in for "cuda") other than the data's."""

import torch

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
T, D = 6, 8
rt = TrainingRuntime()
rt.start(model_id="fixbench-mask", config={"steps": 20}, script_path=__file__)
x = torch.randn(4, T, D)
y = torch.randn(4, T, D)
qkv = torch.nn.Linear(D, 3 * D)
opt = torch.optim.SGD(qkv.parameters(), lr=0.1)
for step in range(1, 21):
    q, k, v = qkv(x).chunk(3, dim=-1)
    scores = q @ k.transpose(1, 2) / D**0.5
    mask = torch.tril(torch.ones(T, T, device="meta"))
    scores = scores.masked_fill(mask == 0, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    loss = ((out - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
