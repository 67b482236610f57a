"""A small character-level transformer trained on CPU, reporting to twinkle-auto.

2 layers, d_model 64, 4 heads, context 64, batch 16, AdamW, cross entropy; ~25 ms/step on one CPU thread.
Run by hand:   TWINKLE_RUN_ID=ct TWINKLE_HOME=/tmp/h python examples/char_transformer/train.py
Or:            twinkle-auto start ct --script examples/char_transformer/train.py

Settings (environment only):
  TOTAL_STEPS      last step to train to (default 2000)
  STEP_SLEEP       seconds to sleep after each step, so tests can slow it down (default 0)
  CKPT_EVERY       save checkpoint.pt every N steps (default 50); also saved on SIGTERM and at the end
  EVAL_EVERY       eval_loss on held-out text and a log line every N steps (default 20)
  LR               peak learning rate (default 3e-3; warmup then cosine decay to 10%)
  SEED             seed for weights and batches (default 0)
  DATA_PATH        training text (default: data.txt beside this script, in the run folder, or in the
                   twinkle-auto source tree's examples/char_transformer/)
  OMP_NUM_THREADS  torch CPU threads (default 1)

checkpoint.pt (model, optimizer, step, RNG states) lives in the run folder; a relaunch resumes from it
and its step numbers go on from the checkpoint's step + 1.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from twinkle_auto.runtime import TrainingRuntime  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

TOTAL_STEPS = int(os.environ.get("TOTAL_STEPS", "2000"))
STEP_SLEEP = float(os.environ.get("STEP_SLEEP", "0"))
CKPT_EVERY = max(1, int(os.environ.get("CKPT_EVERY", "50")))
EVAL_EVERY = max(1, int(os.environ.get("EVAL_EVERY", "20")))
LR = float(os.environ.get("LR", "3e-3"))
SEED = int(os.environ.get("SEED", "0"))
N_LAYERS, D_MODEL, N_HEADS, CONTEXT, BATCH = 2, 64, 4, 64, 16
WARMUP_STEPS, WEIGHT_DECAY, GRAD_CLIP, EVAL_BATCHES = 50, 0.01, 1.0, 4


def find_data(run_dir: Path) -> Path:
    """The launcher copies only train.py into the run folder, so data.txt may be elsewhere."""
    if os.environ.get("DATA_PATH"):
        return Path(os.environ["DATA_PATH"])
    candidates = [Path(__file__).resolve().parent / "data.txt", run_dir / "data.txt"]
    try:
        import twinkle_auto

        source_root = Path(twinkle_auto.__file__).resolve().parents[2]
        candidates.append(source_root / "examples" / "char_transformer" / "data.txt")
    except (ImportError, IndexError):
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no data.txt found (set DATA_PATH); looked in {[str(p) for p in candidates]}")


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(D_MODEL)
        self.qkv = nn.Linear(D_MODEL, 3 * D_MODEL)
        self.proj = nn.Linear(D_MODEL, D_MODEL)
        self.ln2 = nn.LayerNorm(D_MODEL)
        self.mlp = nn.Sequential(nn.Linear(D_MODEL, 4 * D_MODEL), nn.GELU(), nn.Linear(4 * D_MODEL, D_MODEL))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, N_HEADS, C // N_HEADS).transpose(1, 2) for t in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, D_MODEL)
        self.pos_emb = nn.Embedding(CONTEXT, D_MODEL)
        self.blocks = nn.Sequential(*[Block() for _ in range(N_LAYERS)])
        self.ln_f = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))
        return self.head(self.ln_f(self.blocks(x)))


def compute_loss(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    B, T, C = logits.shape
    return F.cross_entropy(logits.view(B * T, C), targets.view(B * T))


def get_batch(data: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(len(data) - CONTEXT - 1, (BATCH,), generator=gen)
    x = torch.stack([data[s : s + CONTEXT] for s in starts.tolist()])
    y = torch.stack([data[s + 1 : s + 1 + CONTEXT] for s in starts.tolist()])
    return x, y


def lr_at(step: int) -> float:
    if step <= WARMUP_STEPS:
        return LR * step / WARMUP_STEPS
    progress = min(1.0, (step - WARMUP_STEPS) / max(1, TOTAL_STEPS - WARMUP_STEPS))
    return LR * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model: nn.Module, data: torch.Tensor) -> float:
    model.eval()
    gen = torch.Generator().manual_seed(1234)  # the same held-out batches every time
    losses = [compute_loss(model, *get_batch(data, gen)).item() for _ in range(EVAL_BATCHES)]
    model.train()
    return sum(losses) / len(losses)


def main() -> None:
    config = {
        "n_layers": N_LAYERS,
        "d_model": D_MODEL,
        "n_heads": N_HEADS,
        "context": CONTEXT,
        "batch_size": BATCH,
        "lr": LR,
        "warmup_steps": WARMUP_STEPS,
        "weight_decay": WEIGHT_DECAY,
        "grad_clip": GRAD_CLIP,
        "optimizer": "AdamW",
        "total_steps": TOTAL_STEPS,
        "ckpt_every": CKPT_EVERY,
        "eval_every": EVAL_EVERY,
        "seed": SEED,
        "threads": torch.get_num_threads(),
    }
    rt = TrainingRuntime()
    rt.start(model_id="char-transformer-2L", config=config, script_path=__file__)
    run_dir = Path(rt.run_dir)
    ckpt_path = run_dir / "checkpoint.pt"

    data_path = find_data(run_dir)
    if data_path.resolve() != (run_dir / "data.txt").resolve():
        shutil.copyfile(data_path, run_dir / "data.txt")  # relaunches and fixed versions use the same text
    text = data_path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    encoded = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)
    split = int(0.9 * len(encoded))
    train_data, val_data = encoded[:split], encoded[split:]
    rt.log(
        f"data: {data_path} ({len(text)} chars, vocab {len(chars)}, {split} train / {len(val_data)} held out)"
    )

    torch.manual_seed(SEED)
    model = CharTransformer(len(chars))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    gen = torch.Generator().manual_seed(SEED)
    n_params = sum(p.numel() for p in model.parameters())
    rt.log(f"model: {n_params} parameters, {torch.get_num_threads()} thread(s)")

    step = 0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        if ckpt["vocab"] != "".join(chars):
            raise ValueError(f"{ckpt_path} was trained on a different text (vocabulary differs)")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        gen.set_state(ckpt["batch_rng"])
        step = int(ckpt["step"])
        rt.log(f"Resumed from step {step}")

    def save_checkpoint(at_step: int) -> Path:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": at_step,
            "torch_rng": torch.get_rng_state(),
            "batch_rng": gen.get_state(),
            "vocab": "".join(chars),
        }
        tmp = ckpt_path.with_name(f".{ckpt_path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, ckpt_path)
        return ckpt_path

    # SIGTERM: the runtime calls this at the end of the current step (inside log_metrics), then exits.
    rt.register_graceful_shutdown(on_shutdown=lambda _rt: save_checkpoint(step))

    model.train()
    while step < TOTAL_STEPS:
        step += 1
        t0 = time.perf_counter()
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, gen)
        loss = compute_loss(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        dt = time.perf_counter() - t0

        metrics = {
            "loss": loss.item(),
            "grad_norm": grad_norm.item(),
            "lr": lr,
            "tokens_per_s": BATCH * CONTEXT / dt,
        }
        if step % EVAL_EVERY == 0:
            metrics["eval_loss"] = evaluate(model, val_data)
            rt.log(
                f"step {step}/{TOTAL_STEPS} loss {metrics['loss']:.4f} eval_loss {metrics['eval_loss']:.4f} "
                f"grad_norm {metrics['grad_norm']:.3f} lr {lr:.2e} {dt * 1000:.1f} ms/step"
            )
        if step % CKPT_EVERY == 0:
            save_checkpoint(step)
        rt.log_metrics(step=step, **metrics)
        if STEP_SLEEP > 0:
            time.sleep(STEP_SLEEP)

    save_checkpoint(step)
    rt.log(f"Training complete at step {step}; checkpoint {ckpt_path}")
    rt.finish()


if __name__ == "__main__":
    main()
