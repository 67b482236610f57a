"""Dtype: an integer padding mask passed to scaled_dot_product_attention."""

import torch
import torch.nn.functional as F

from twinkle_auto.runtime import TrainingRuntime

torch.manual_seed(0)
rt = TrainingRuntime()
rt.start(model_id="fixbench-sdpa", config={"steps": 20}, script_path=__file__)
q = torch.randn(2, 1, 5, 4)
target = torch.randn(2, 1, 5, 4)
proj = torch.nn.Linear(4, 4)
lengths = torch.tensor([5, 3])
attention_mask = (torch.arange(5)[None, :] < lengths[:, None]).long()[:, None, None, :]
opt = torch.optim.SGD(proj.parameters(), lr=0.1)
for step in range(1, 21):
    k = proj(q)
    out = F.scaled_dot_product_attention(q, k, k, attn_mask=attention_mask)
    loss = ((out - target) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    rt.log_metrics(step=step, loss=loss.item())
print(f"CHECK {loss.item():.6f}", flush=True)
rt.finish()
