"""The typed parameters of each recipe: one pydantic model per recipe, units and meaning in each field.

The descriptions are what the chat model reads (they land in the tool's JSON schema), so each one says
the unit, the range and what the value does to the run. Unknown fields are refused rather than ignored:
a misspelt `lerning_rate` silently falling back to the default is worse than an error. A few names a
model commonly uses instead (`steps`, `learning_rate`, `model_id`) are accepted as aliases.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

DEFAULT_SERVER_URL = "http://127.0.0.1:8000"


class RecipeParams(BaseModel):
    """What every recipe takes: model, data, length of the run, optimisation and checkpointing."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    model: str = Field(
        validation_alias=AliasChoices("model", "model_id", "base_model"),
        description="Local Hugging Face model folder or ModelScope id (owner/name), e.g. Qwen/Qwen2.5-0.5B",
    )
    dataset: str = Field(
        validation_alias=AliasChoices("dataset", "dataset_id", "data", "data_path", "dataset_path"),
        description="Local .jsonl/.json/.parquet file or ModelScope dataset id (owner/name), e.g. modelscope/gsm8k",
    )
    dataset_subset: str | None = Field(
        None, description="Subset of a hub dataset, e.g. 'main' for gsm8k; ignored for files"
    )
    dataset_split: str = Field("train", description="Split of a hub dataset; ignored for files")
    max_steps: int = Field(
        100,
        ge=1,
        le=10_000_000,
        validation_alias=AliasChoices("max_steps", "steps", "total_steps", "num_steps"),
        description="Optimizer steps to train; the run finishes after this many",
    )
    batch_size: int = Field(4, ge=1, le=4096, description="Training samples per optimizer step")
    lr: float = Field(
        1e-5,
        gt=0,
        lt=1,
        validation_alias=AliasChoices("lr", "learning_rate"),
        description="Peak learning rate (linear decay for the TRL recipes)",
    )
    max_length: int = Field(
        512, ge=8, le=131_072, description="Maximum tokens per sample; longer ones are truncated"
    )
    save_every: int = Field(
        50, ge=1, le=10_000_000, description="Checkpoint every N steps (also at the end and on stop)"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Random seed for initialisation and data order")
    step_sleep: float = Field(
        0.0,
        ge=0,
        le=60,
        description="Seconds to wait after each step (demos and tests only)",
        json_schema_extra={"x-catalogue": False},
    )


class LoraParams(BaseModel):
    """LoRA adapter shape (0 = full fine-tuning where the recipe allows it)."""

    lora_rank: int = Field(
        0, ge=0, le=1024, description="LoRA rank: 0 trains all weights, 8-64 a small adapter"
    )
    lora_alpha: int = Field(32, ge=1, le=4096, description="LoRA scaling alpha (used when lora_rank > 0)")


class GenerationParams(BaseModel):
    """How GRPO samples completions and scores them."""

    num_generations: int = Field(
        4,
        ge=2,
        le=256,
        validation_alias=AliasChoices("num_generations", "group_size", "num_samples"),
        description="Completions sampled per prompt (the group whose rewards are compared)",
    )
    max_new_tokens: int = Field(
        256,
        ge=1,
        le=65_536,
        validation_alias=AliasChoices("max_new_tokens", "max_completion_length", "max_tokens"),
        description="Maximum tokens per sampled completion",
    )
    temperature: float = Field(1.0, gt=0, le=5, description="Sampling temperature of the completions")
    rewards: list[Literal["accuracy", "format"]] = Field(
        default_factory=lambda: ["accuracy", "format"],
        min_length=1,
        description="Reward functions, summed: 'accuracy' (final number = the row's answer, math data) "
        "and 'format' (answer given as '#### n' or \\boxed{n})",
    )
    beta: float = Field(0.0, ge=0, le=10, description="KL penalty against the reference model (0 = none)")

    @model_validator(mode="after")
    def _length_fits(self) -> GenerationParams:
        max_length = getattr(self, "max_length", None)
        if isinstance(max_length, int) and self.max_new_tokens >= max_length:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) must be below max_length ({max_length}), "
                "which bounds prompt plus completion"
            )
        return self


class TwinkleParams(BaseModel):
    """Where the Twinkle server is."""

    server_url: str = Field(
        DEFAULT_SERVER_URL,
        pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(:\d+)?(/.*)?$",
        validation_alias=AliasChoices("server_url", "server", "base_url", "url"),
        description="URL of the running Twinkle server (start_server reports it)",
    )


class TorchSFTParams(LoraParams, RecipeParams):
    """torch-sft: a plain PyTorch loop over a causal LM from transformers."""

    lr: float = Field(
        2e-5,
        gt=0,
        lt=1,
        validation_alias=AliasChoices("lr", "learning_rate"),
        description="Peak learning rate (warmup, then cosine decay to 10%)",
    )
    warmup_steps: int = Field(0, ge=0, le=10_000_000, description="Steps of linear warmup from 0 to lr")


class TrlSFTParams(LoraParams, RecipeParams):
    """trl-sft: TRL's SFTTrainer."""

    lr: float = Field(
        2e-5,
        gt=0,
        lt=1,
        validation_alias=AliasChoices("lr", "learning_rate"),
        description="Peak learning rate (linear decay)",
    )


class TrlGRPOParams(GenerationParams, LoraParams, RecipeParams):
    """trl-grpo: TRL's GRPOTrainer with rule-based rewards."""

    batch_size: int = Field(
        4,
        ge=1,
        le=4096,
        description="Prompts per step; each gets num_generations completions",
    )


class TwinkleSFTParams(TwinkleParams, RecipeParams):
    """twinkle-sft: the Twinkle client sends batches; the server holds model, LoRA adapter and optimizer."""

    model: str = Field(
        validation_alias=AliasChoices("model", "model_id", "base_model"),
        description="Model the Twinkle server serves (list_supported_models), e.g. Qwen/Qwen3.5-4B or "
        "mock-model",
    )
    lr: float = Field(
        1e-4,
        gt=0,
        lt=1,
        validation_alias=AliasChoices("lr", "learning_rate"),
        description="Peak learning rate of the adapter (cosine decay)",
    )
    lora_rank: int = Field(8, ge=1, le=1024, description="LoRA rank of the adapter the server trains")
    lora_alpha: int = Field(32, ge=1, le=4096, description="LoRA scaling alpha")


class TwinkleGRPOParams(GenerationParams, TwinkleSFTParams):
    """twinkle-grpo: the server samples completions and trains; the script scores them and sends advantages."""

    batch_size: int = Field(
        4,
        ge=1,
        le=4096,
        description="Prompts per step; each gets num_generations completions",
    )
    sync_every: int = Field(
        1,
        ge=1,
        le=10_000,
        description="Steps between handing the trained adapter to the sampler (1 = on-policy)",
    )
