"""A small MLP classifier on synthetic tabular data, reporting to twinkle-auto (patch-corpus base script).

Written in the style of examples/: settings from the environment, a TrainingRuntime, a checkpoint in
the run folder, resume from it, metrics every step.
"""

import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from twinkle_auto.runtime import TrainingRuntime

EPOCHS = int(os.environ.get("EPOCHS", "5"))
BATCH_SIZE = int(os.environ.get("BATCH_SIZE", "32"))
LR = float(os.environ.get("LR", "0.01"))
N_CLASSES = 5
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

rt = TrainingRuntime()
rt.start(model_id="mlp", config={"epochs": EPOCHS, "batch_size": BATCH_SIZE, "lr": LR}, script_path=__file__)
ckpt_path = os.path.join(rt.run_dir, "checkpoint.pt")

torch.manual_seed(0)
X = torch.randn(400, 20)
y = torch.randint(0, N_CLASSES, (400,))
train_ds = TensorDataset(X[:320], y[:320])
val_ds = TensorDataset(X[320:], y[320:])
train_loader = DataLoader(train_ds, batch_size=BATCH_SIZE, shuffle=True)
val_loader = DataLoader(val_ds, batch_size=BATCH_SIZE)


class MLP(nn.Module):
    def __init__(self, n_in, n_hidden, n_out):
        super().__init__()
        self.fc1 = nn.Linear(n_in, n_hidden)
        self.fc2 = nn.Linear(n_hidden, n_out)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        h = self.dropout(h)
        return self.fc2(h)


model = MLP(20, 64, N_CLASSES).to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
history = {"train": [], "val": []}


def evaluate(loader):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            logits = model(xb)
            total += F.cross_entropy(logits, yb, reduction="sum").item()
            count += len(yb)
    model.train()
    return total / max(count, 1)


def save_checkpoint(runtime=None):
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(), "step": step}, ckpt_path)
    with open(os.path.join(rt.run_dir, "history.json"), "w") as f:
        json.dump(history, f)
    return ckpt_path


rt.register_graceful_shutdown(on_shutdown=save_checkpoint)
step = rt.get_resume_info()["last_step"]
if step > 0 and os.path.exists(ckpt_path):
    state = torch.load(ckpt_path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optim"])

start_epoch = step // len(train_loader)
for epoch in range(start_epoch, EPOCHS):
    for xb, yb in train_loader:
        step += 1
        xb, yb = xb.to(device), yb.to(device)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history["train"].append(loss.item())
        rt.log_metrics(step=step, loss=loss.item(), grad_norm=float(grad_norm), lr=LR)
    val_loss = evaluate(val_loader)
    history["val"].append(val_loss)
    rt.log(f"epoch {epoch} val_loss {val_loss:.4f} ppl {math.exp(val_loss):.2f}")
    save_checkpoint()

rt.finish()
