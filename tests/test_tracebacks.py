"""last_traceback and classify_error on the shapes real logs take (full, cut, prefixed, chained, wrapped)."""

from __future__ import annotations

import pytest

from twinkle_auto.monitor.tracebacks import classify_error, last_traceback

FULL = """\
step 10 loss 2.3
Traceback (most recent call last):
  File "/work/train.py", line 12, in <module>
    trainer = SFTTrainer(tokenizer=tok)
TypeError: SFTTrainer.__init__() got an unexpected keyword argument 'tokenizer'
"""

CHAINED = """\
Traceback (most recent call last):
  File "/x/urllib3/connectionpool.py", line 1, in urlopen
    conn.request()
ConnectionRefusedError: [Errno 111] Connection refused

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/work/train.py", line 3, in <module>
    load_dataset("x")
OSError: We couldn't connect to 'https://huggingface.co' to load this file
"""

IGNORED_AFTER = """\
 File "/site-packages/trl/trainer/grpo_trainer.py", line 1200, in _calculate_rewards
    output_reward_func = reward_func(
                         ^^^^^^^^^^^^
TypeError: reward() got multiple values for keyword argument 'completions'
  0%|          | 0/100 [00:01<?, ?it/s]
Exception ignored in: <function ResourceTracker.__del__ at 0x7f>
Traceback (most recent call last):
  File "/site-packages/multiprocess/resource_tracker.py", line 80, in __del__
AttributeError: '_thread.RLock' object has no attribute '_recursion_count'
"""

TORCHRUN = """\
[rank0]: Traceback (most recent call last):
[rank0]:   File "/work/train.py", line 9, in <module>
[rank0]:     x = batch["text"]
[rank0]: KeyError: 'text'
E1206 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: 1)
Traceback (most recent call last):
  File "/usr/bin/torchrun", line 8, in <module>
    sys.exit(main())
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
"""


def test_full_traceback_from_header_to_exception() -> None:
    tb = last_traceback(FULL)
    assert tb is not None
    assert tb.startswith("Traceback (most recent call last):")
    assert tb.endswith("unexpected keyword argument 'tokenizer'")
    assert "step 10" not in tb


def test_chained_traceback_is_kept_whole() -> None:
    tb = last_traceback(CHAINED)
    assert tb is not None and tb.startswith("Traceback") and "ConnectionRefusedError" in tb
    assert tb.endswith("to load this file")


def test_head_cut_off_keeps_the_surviving_frames() -> None:
    text = "    trainer = SFTTrainer(model=m,\n" + "\n".join(FULL.splitlines()[2:])
    tb = last_traceback(text)
    assert tb is not None and tb.startswith("    trainer = SFTTrainer(model=m,")


def test_only_the_final_exception_line() -> None:
    assert last_traceback("RuntimeError: expected scalar type Float but found BFloat16") == (
        "RuntimeError: expected scalar type Float but found BFloat16"
    )


def test_exception_ignored_at_shutdown_is_skipped() -> None:
    tb = last_traceback(IGNORED_AFTER)
    assert tb is not None and tb.endswith("keyword argument 'completions'")
    assert "Exception ignored" not in tb and "_recursion_count" not in tb


def test_rank_and_quote_prefixes() -> None:
    tb = last_traceback('> Traceback (most recent call last):\n  File "a.py", line 1\nValueError: bad\n')
    assert tb is not None and tb.startswith("> Traceback")
    result = classify_error(TORCHRUN.split("E1206")[0])
    assert result is not None
    assert (result["kind"], result["category"], result["exception"], result["message"], result["rank"]) == (
        "CODE",
        "KeyError",
        "KeyError",
        "'text'",
        0,
    )
    assert result["origin"].startswith("raised in your code (/work/train.py:9")


def test_jupyter_traceback() -> None:
    text = (
        "---------------------------------------------------------------------------\n"
        "TypeError                                 Traceback (most recent call last)\n"
        "Cell In[18], line 3\n"
        "----> 3 trainer = SFTTrainer(\n\n"
        "File ~/venv/deprecation.py:165, in wrapped(*args, **kwargs)\n"
        "--> 165 return func(*args, **kwargs)\n\n"
        "TypeError: SFTTrainer.__init__() got an unexpected keyword argument 'dataset_text_field'\n"
    )
    tb = last_traceback(text)
    assert tb is not None and tb.startswith("-----")
    assert "TypeError                                 Traceback" in tb
    assert classify_error(text)["category"] == "TypeError"  # type: ignore[index]


def test_no_traceback() -> None:
    assert last_traceback("") is None
    assert last_traceback("{'loss': 1.2}\nsaving checkpoint\nError while serializing stuff\n") is None
    assert classify_error("{'loss': 1.2}\nall good\n") is None
    # A bare class name alone is not a crash.
    assert last_traceback("results:\nValueError\n") is None


def test_cut_after_the_header_is_still_a_traceback() -> None:
    tb = last_traceback('ok\nTraceback (most recent call last):\n  File "a.py", line 1, in <module>\n')
    assert tb is not None and tb.startswith("Traceback")


@pytest.mark.parametrize(
    ("log", "category"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 148.00 MiB.", "cuda_oom"),
        ("RuntimeError: CUDA error: an illegal memory access was encountered", "cuda_error"),
        ("RuntimeError: NCCL error in: ProcessGroupNCCL.cpp:1, unhandled system error", "nccl"),
        (
            "[rank0]:[E1206 ProcessGroupNCCL.cpp:607] [Rank 0] Watchdog caught collective operation timeout: "
            "WorkNCCL(SeqNum=7753) ran for 600061 milliseconds before timing out.",
            "nccl",
        ),
        ("OSError: [Errno 28] No space left on device", "disk_full"),
        ("safetensors_rust.SafetensorError: I/O error: No space left on device (os error 28)", "disk_full"),
        ("ConnectionError: Couldn't reach https://raw.githubusercontent.com/x", "network"),
        (
            "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='hf.co', port=443): "
            "Max retries exceeded with url: /api",
            "network",
        ),
        ("urllib3.exceptions.ReadTimeoutError: Read timed out.", "network"),
        ("ModuleNotFoundError: No module named 'flash_attn'", "missing_package"),
        (
            "ImportError: Using bitsandbytes requires the latest version: `pip install -U bitsandbytes`",
            "missing_package",
        ),
        ("RuntimeError: No CUDA GPUs are available", "no_gpu"),
        ("AssertionError: Torch not compiled with CUDA enabled", "no_gpu"),
        ("step 500\nKilled\n", "killed"),
        ("RuntimeError: DataLoader worker (pid 123) is killed by signal: Killed.", "host_oom"),
    ],
)
def test_environment_errors(log: str, category: str) -> None:
    result = classify_error(log)
    assert result is not None
    assert (result["kind"], result["category"]) == ("ENV", category)


@pytest.mark.parametrize(
    ("log", "category"),
    [
        (FULL, "TypeError"),
        ("Traceback (most recent call last):\n  File \"t.py\", line 1\nKeyError: 'text'", "KeyError"),
        ("AttributeError: 'NoneType' object has no attribute 'pad_token_id'", "AttributeError"),
        ("RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x8 and 16x4)", "RuntimeError"),
        ("RuntimeError: expected scalar type Float but found BFloat16", "RuntimeError"),
        ("ValueError: The global train batch size (1 x 1) must be evenly divisible", "ValueError"),
        ("ImportError: cannot import name 'SFTConfig' from 'trl'", "ImportError"),
        ("RuntimeError: CUDA error: device-side assert triggered", "device_side_assert"),
        (
            "huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. Repository Not Found",
            "repo_not_found",
        ),
        (IGNORED_AFTER, "TypeError"),
    ],
)
def test_code_errors(log: str, category: str) -> None:
    result = classify_error(log)
    assert result is not None
    assert (result["kind"], result["category"]) == ("CODE", category)


def test_chained_environment_error_wins() -> None:
    assert classify_error(CHAINED)["kind"] == "ENV"  # type: ignore[index]


def test_launcher_wrapper_defers_to_the_child_traceback() -> None:
    result = classify_error(TORCHRUN)
    assert result is not None and result["exception"] == "KeyError" and result["kind"] == "CODE"


def test_launcher_wrapper_alone_is_not_a_code_error() -> None:
    wrapper_only = "\n".join(TORCHRUN.splitlines()[5:])
    assert classify_error(wrapper_only) is None
    killed = wrapper_only + "\n  traceback : Signal 9 (SIGKILL) received by PID 1234\n"
    assert classify_error(killed)["category"] == "killed"  # type: ignore[index]


def test_message_is_one_line() -> None:
    result = classify_error("ValueError: first line\n  second line of the message\n")
    assert result is not None and result["message"] == "first line second line of the message"
