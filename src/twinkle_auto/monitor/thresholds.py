"""Every number the deterministic monitor judges a run by, in one frozen dataclass.

Why one place: upstream kept its thresholds in an LLM prompt, where nobody could test or tune them. Here
each field names where its value comes from, so a reviewer can check it against the source, and a caller
(a benchmark, a test, a user's config) can pass a modified copy with `dataclasses.replace`.

Windows and counts are in *logged rows* (entries of metrics.jsonl), not optimizer steps: the monitor only
sees what the trainer logged, and `logging_steps` varies from 1 to hundreds between runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    # --- loss spikes -------------------------------------------------------------------------------------
    spike_sigma: float = 6.0
    """OLMo: a loss above mean + 6 sigma of the recent window is a spike (value given in the issue)."""
    spike_sigma_window: int = 128
    """OLMo: the window for that mean and sigma, 128 steps (value given in the issue)."""
    spike_sigma_min_rel_jump: float = 0.10
    """Ours: also require the spike to be 10% above the window mean, so a near-constant loss (sigma ~ 0)
    does not turn a tiny wobble into a '6 sigma' event."""
    spike_mean_multiplier: float = 2.0
    """llm-foundry KillLossSpike `outlier_multiplier`: a loss >= 2x the running mean is an outlier."""
    spike_mean_window: int = 100
    """llm-foundry KillLossSpike `window_size` (its MIN_WINDOW_SIZE is also 100)."""
    spike_mean_patience: int = 4
    """llm-foundry KillLossSpike `patience`: more than 4 consecutive outliers (i.e. 5) is a spike."""
    spike_max_factor: float = 10.0
    """Megatron-LM `check_for_spiky_loss`: SPIKY_LOSS_FACTOR = 10, a loss 10x the largest seen so far."""
    spike_min_history: int = 20
    """Ours: rows of history before the sigma and running-mean rules judge anything. llm-foundry waits for
    a full window of 100 batches; logged rows are sparser, and with fewer than ~20 points the mean and sigma
    are mostly warm-up noise."""

    # --- plateau -----------------------------------------------------------------------------------------
    plateau_window: int = 1000
    """Ours: judge the plateau over (at most) the last 1000 logged rows, i.e. the whole recent history the
    snapshot carries. A shorter window calls the flat tail of every converged run a plateau (the LGTM
    cases 19 and 22 lose < 2% over their last 50 rows, yet 20-35% over the run)."""
    plateau_min_rows: int = 50
    """Ours: fewer logged rows than this never make a plateau; short runs are dominated by warm-up."""
    plateau_edge_fraction: float = 0.2
    """Ours: compare the mean of the first fifth of the window with the mean of the last fifth (a robust
    trend on noisy per-step losses, in the spirit of ReduceLROnPlateau's 'no improvement over patience')."""
    plateau_min_rel_drop: float = 0.03
    """Ours: less than a 3% relative loss drop across the window is a plateau (or a rise)."""
    loss_floor: float = 1e-3
    """Ours: losses whose reference level is below this are 'already ~0'; relative plateau and spike maths
    on them would divide noise by zero."""

    # --- KL (RLHF / GRPO) --------------------------------------------------------------------------------
    kl_max: float = 10.0
    """TRL: a KL to the reference above ~10 means the policy has drifted far (value given in the issue)."""
    kl_min: float = -1.0
    """TRL PPOTrainer: warns 'KL divergence is starting to become negative' when mean KL < -1.0 (earlier
    releases warned at < 0). The true KL is >= 0; small negatives are estimator noise. A missing `kl` key
    is normal (beta = 0 in GRPO)."""

    # --- learning signal and length (GRPO) ---------------------------------------------------------------
    signal_window: int = 5
    """Ours: '-> 0' / '-> 1' means 'for each of the last 5 logged rows' (or all rows, if fewer)."""
    zero_eps: float = 1e-6
    """Ours: reward_std and grad_norm below this are zero; frac_reward_zero_std above 1 - this is one.
    TRL logs exact 0.0 / 1.0 when every group has identical rewards."""
    clipped_ratio_high: float = 0.9
    """Ours: completions/clipped_ratio '-> 1' means >= 0.9 on each of the last `signal_window` rows: 90% of
    completions hit max_completion_length (TRL docs: raise max_completion_length or penalise length)."""
    reward_fall_sigma: float = 1.0
    """Ours: reward counts as falling only when the recent mean is more than 1 standard deviation (of the
    compared rows) below the previous mean; GRPO rewards are noisy, anything less is 'flat'."""

    # --- liveness ----------------------------------------------------------------------------------------
    stall_seconds: float = 300.0
    """The issue: process alive but no new metric for longer than 300 s is a stall (configurable)."""


DEFAULT_THRESHOLDS = Thresholds()
