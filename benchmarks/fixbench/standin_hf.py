"""Small local stand-ins of TRL/transformers APIs, with the signatures of their current releases.

The fix benchmark re-creates crashes of real training scripts against these libraries without
installing or downloading them: the stand-ins accept exactly the keywords the real classes accept
today (so an old keyword fails with the real TypeError) and train a real tiny torch model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TrainingArguments:
    output_dir: str = "out"
    learning_rate: float = 1e-2
    max_steps: int = 30
    eval_strategy: str = "no"
    logging_steps: int = 1


@dataclass
class SFTConfig(TrainingArguments):
    dataset_text_field: str = "text"
    max_length: int = 32
    packing: bool = False


class CharTokenizer:
    """A character tokenizer that, like Llama's, ships without a pad token."""

    eos_token = "\x03"

    def __init__(self) -> None:
        self.pad_token: str | None = None

    @classmethod
    def from_pretrained(cls, name: str) -> CharTokenizer:
        return cls()

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else ord(token) % 64

    @property
    def pad_token_id(self) -> int | None:
        return self.token_id(self.pad_token)

    def __call__(self, texts: list[str], padding: bool = False) -> dict[str, torch.Tensor]:
        ids = [[ord(ch) % 64 for ch in text] for text in texts]
        if padding:
            if self.pad_token is None:
                raise ValueError(
                    "Asking to pad but the tokenizer does not have a padding token. Please select a token to "
                    "use as `pad_token` `(tokenizer.pad_token = tokenizer.eos_token e.g.)`"
                )
            width = max(len(row) for row in ids)
            ids = [row + [self.pad_token_id] * (width - len(row)) for row in ids]
        return {"input_ids": torch.tensor(ids)}


class SFTTrainer:
    """Trains `model` (a torch module mapping token ids to logits) on the `text` field of the dataset."""

    def __init__(self, model=None, args=None, train_dataset=None, processing_class=None) -> None:
        self.model = model
        self.args = args or SFTConfig()
        self.train_dataset = train_dataset or []
        self.processing_class = processing_class

    def train(self, on_step=None) -> float:
        field = self.args.dataset_text_field
        texts = [row[field] for row in self.train_dataset]
        tok = self.processing_class or CharTokenizer()
        batch = tok(texts, padding=True)["input_ids"][:, : self.args.max_length]
        optimizer = torch.optim.SGD(self.model.parameters(), lr=self.args.learning_rate)
        loss = torch.tensor(0.0)
        for step in range(1, self.args.max_steps + 1):
            logits = self.model(batch[:, :-1])
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step, loss.item())
        return loss.item()


class TinyLM(torch.nn.Module):
    def __init__(self, vocab: int = 64, dim: int = 16) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids))
