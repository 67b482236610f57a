"""Every number the deterministic monitor judges a run by, in one frozen dataclass.

Why one place: upstream kept its thresholds in an LLM prompt, where nobody could test or tune them. Here
each field names where its value comes from and the general principle it follows, so a reviewer can check
it against the source, and a caller (a benchmark, a test, a user's config) can pass a modified copy with
`dataclasses.replace`. No rule here is tied to one run: each must make sense for a run never seen.

Windows and counts are in *logged rows* (entries of metrics.jsonl), not optimizer steps: the monitor only
sees what the trainer logged, and `logging_steps` varies from 1 to hundreds between runs. A rule that
needs the run's start reads it from the first rows of the file (the snapshot carries them), so the rules
judge a 100,000-step run by the same principle as a 30-row one.

Principles:
1. Non-finite values are wrong at any length (IEEE NaN/Inf never come out of a healthy step).
2. A change counts only against the run's own noise (a robust trend test), and only when it is material.
3. "Flat" is judged against where the loss started: a flat tail after real progress is convergence,
   whatever the LR schedule (at a constant LR a converged run is flat too); never moving from the first
   value is a problem at any length. A run still warming up its LR has not started learning yet.
4. A spike the run has already recovered from is information, not a warning.
5. An RL trainer's loss is not a progress measure; its learning signal (reward spread, gradient) is.

Why a process died has no numbers, only rules; they live with their tables in monitor/tracebacks.py
(parsing in connection/tracebacks.py) and follow these principles:
6. A crash is what the process said last: the deciding traceback is the last fatal one (not a shutdown
   "Exception ignored" report, not a launcher's wrapper about a child, the first failing rank of several);
   a bare error line without frames counts only as the final output of a process that did not exit 0.
7. FIX vs ENV by where the error comes from, then by its words: a failed write in the storage layer
   (EIO, ENOSPC, "failed writing file", torch.save's "cannot be opened" under a save frame) is the disk;
   a signature/attribute error raised inside installed packages about a name the user's code never uses
   is two package versions that do not fit (dependency mismatch, pip hint); the same error from the
   user's own call, or about a callback the user wrote, is a script bug. OOM, CUDA, NCCL, network,
   missing packages are ENV by their words (tables from the PyTorch, NCCL, HF Hub error texts).
8. A state we cannot observe is not "fine": no live pid while the status says running, and a log that
   ends in an error, is a warning (never an automatic fix).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    # --- loss spikes (principle 4) -----------------------------------------------------------------------
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
    spike_recent_rows: int = 3
    """Principle 4: a spike is a warning while it lasts, i.e. its latest hit is among the last 3 logged
    rows; an older, recovered spike is reported as info (single hard batches happen in healthy runs, and
    llm-foundry's KillLossSpike also acts only on a spike that persists)."""

    # --- trend and divergence (principle 2) --------------------------------------------------------------
    trend_min_rows: int = 8
    """Mann-Kendall: with n = 8 a strictly monotonic series reaches z = 3.3, so 8 rows are the fewest that
    can pass the test below; fewer rows are never called a trend."""
    trend_window: int = 64
    """Ours: the trend is tested over the last (at most) 64 rows: recent enough to be 'now', long enough
    for the test to see through per-step noise."""
    trend_z: float = 3.0
    """Mann-Kendall (Mann 1945, Kendall 1975): |z| >= 3 is p < 0.0014 one-sided, so a stationary noisy loss
    tested at every tick of a long run almost never passes. The test is rank-based: it needs no noise model
    and one outlier cannot make a trend."""
    trend_min_rel_change: float = 0.10
    """Ours: a significant trend also has to be material: the Theil-Sen slope (Sen 1968, the median of
    pairwise slopes) times the window's length is >= 10% of the loss level. A significant 1% drift is not
    worth a user's attention."""
    divergence_factor: float = 0.5
    """Ours: diverging = the recent loss rose back from the run's best by >= half the distance it had
    fallen from its start to that best (the run has undone half its progress)."""
    divergence_min_rel: float = 0.10
    """Ours: ... and that rise is >= 10% of the best value (a run that barely moved cannot 'diverge')."""
    divergence_noise_k: float = 4.0
    """Ours: ... and >= 4 robust sigmas of the run's own step-to-step noise (MAD of first differences), so
    noise around a flat tail is never a divergence."""
    smooth_rows: int = 5
    """Ours: start, best and current are medians of 5 consecutive rows: one lucky or unlucky batch does not
    define the run's best or where it is now."""

    # --- frozen, chance level, plateau (principle 3) -----------------------------------------------------
    frozen_min_rows: int = 5
    """Ours: the loss identical (within `frozen_rel_tol`) on the last 5 logged rows is frozen: a loss
    computed from changing batches never repeats to 6 digits unless nothing is being trained (or it is a
    constant such as 0 from a broken loss)."""
    frozen_rel_tol: float = 1e-6
    """Float noise: values equal within 1e-6 relative (fp32 has ~7 significant digits)."""
    chance_min_rows: int = 4
    """Ours: the loss within `chance_rel_tol` of ln(K) for the same K on each of the last 4+ rows (up to
    `trend_min_rows`): the model predicts a uniform distribution over K classes (cross-entropy of uniform
    = ln K) and is not moving off it."""
    chance_rel_tol: float = 1e-3
    """Ours: 0.1% of the level, i.e. the loss is also flat to 0.1% over those rows; per-step noise of a
    learning run is larger than that."""
    chance_max_classes: int = 1_000_000
    """Ours: K from 2 up to a large vocabulary (a language model stuck at ln(vocab size) is at chance)."""
    plateau_min_rows: int = 50
    """Ours: a run with fewer logged rows than this is never called 'no progress'; short runs are dominated
    by warm-up."""
    plateau_min_rel_drop: float = 0.03
    """Ours, after ReduceLROnPlateau's 'no improvement' idea but measured from the run's start: the recent
    loss less than 3% below where the run started, after `plateau_min_rows` rows, is no progress. A flat
    tail after a larger drop is convergence and is never reported."""
    warmup_rel_rise: float = 0.01
    """Ours: the LR rose by > 1% over the recent rows: the run is still warming up, so the no-progress and
    chance-level rules wait (a warm-up LR is too small to move the loss yet)."""
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

    # --- learning signal and length (GRPO, principle 5) --------------------------------------------------
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

    # --- liveness and storage ----------------------------------------------------------------------------
    stall_seconds: float = 300.0
    """The issue: process alive but no new metric for longer than 300 s is a stall (configurable)."""
    disk_min_free_bytes: int = 256 * 1024 * 1024
    """Ours: less than 256 MiB free on the run folder's filesystem is a full disk for training: one
    checkpoint of even a small model (or the metrics file's next flush after ENOSPC) does not fit."""
    disk_min_free_fraction: float = 0.005
    """Ours: ... and less than 0.5% of the filesystem free (a 256 MiB tmpfs that is half empty is fine)."""


DEFAULT_THRESHOLDS = Thresholds()
