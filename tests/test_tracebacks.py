"""last_traceback and classify_error on the shapes real logs take (full, cut, prefixed, chained, wrapped)."""

from __future__ import annotations

import pytest

from twinkle_auto.connection.tracebacks import parse_traceback, script_frames
from twinkle_auto.monitor.tracebacks import classify_error, last_traceback, script_mentions

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
        (
            "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating tensor",
            "cuda_oom",
        ),
        ("RuntimeError: [../third_party/gloo/transport/tcp/pair.cc:598] Connection closed by peer", "nccl"),
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
        ("step 500\nSegmentation fault (core dumped)\n", "native_crash"),
        ("huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated repo", "auth"),
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


# --- the one parser: prefixes, chains, ranks, notebook and debugger formats --------------------------------
TB_BODY = [
    "Traceback (most recent call last):",
    '  File "/work/train.py", line 40, in <module>',
    "    main()",
    '  File "/work/train.py", line 31, in main',
    '    batch = rec["targets"]',
    "KeyError: 'targets'",
]


@pytest.mark.parametrize(
    "prefix",
    [
        "2026-11-30 12:00:01,123 - INFO - ",
        "2026-11-30 12:00:01,123 - train - ERROR - ",
        "[2023-06-02 00:34:14,470] [INFO] [engine.py:21:save] ",
        "2024-11-20 14:37:16 [rank3]: ",
        "E1206 12:00:01.123456 77 api.py:869] ",
        "(TaskRunner pid=4242) ",
        "[default1]:",
        "2024/11/20 14:37:16 - ERROR - ",
        "2026-11-30 12:00:01.123 | ERROR    | __main__:main:12 - ",
        "[INFO|trainer.py:1234] 2024-01-01 12:00:00,000 >> ",
    ],
)
def test_prefixed_lines_parse_like_plain_ones(prefix: str) -> None:
    text = "step 1 loss 2.0\n" + "\n".join(prefix + line for line in TB_BODY) + "\n"
    parsed = parse_traceback(text)
    assert parsed is not None and parsed.exception == "KeyError" and parsed.message == "'targets'"
    assert [(f.file, f.line, f.function) for f in parsed.frames] == [
        ("/work/train.py", 40, "<module>"),
        ("/work/train.py", 31, "main"),
    ]
    assert parsed.frames[-1].code == 'batch = rec["targets"]'
    assert classify_error(text)["kind"] == "CODE"  # type: ignore[index]


def test_logger_exception_prefixes_only_its_first_line() -> None:
    text = "2026-11-30 12:00:01,123 - ERROR - Training failed\n" + "\n".join(TB_BODY) + "\n"
    parsed = parse_traceback(text)
    assert parsed is not None and len(parsed.frames) == 2 and parsed.exception == "KeyError"


def test_chain_last_decides_first_is_context() -> None:
    parsed = parse_traceback(CHAINED)
    assert parsed is not None and parsed.exception == "OSError"
    assert [c.exception for c in parsed.context] == ["ConnectionRefusedError"]
    assert parsed.text.startswith("Traceback") and parsed.text.rstrip().endswith("to load this file")
    assert classify_error(CHAINED)["context"].startswith("ConnectionRefusedError")  # type: ignore[index]


def test_first_failing_rank_decides() -> None:
    oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    nccl = "torch.distributed.DistBackendError: NCCL communicator was aborted on rank 0"
    lines = []
    for rank, exc in ((3, oom), (0, nccl)):
        lines += [f"[rank{rank}]: Traceback (most recent call last):"]
        lines += [f'[rank{rank}]:   File "/work/train.py", line 9, in <module>', f"[rank{rank}]:     step()"]
        lines += [f"[rank{rank}]: {exc}"]
    parsed = parse_traceback("\n".join(lines))
    assert parsed is not None and parsed.rank == 3 and "OutOfMemoryError" in parsed.exception
    assert parsed.ranks_failed == (0, 3)
    assert classify_error("\n".join(lines))["category"] == "cuda_oom"  # type: ignore[index]


def test_interleaved_ranks_keep_their_own_frames() -> None:
    a = [f"[rank0]: {line}" for line in TB_BODY]
    b = [f"[rank1]: {line}" for line in TB_BODY[:-1]] + ["[rank1]: ValueError: other"]
    mixed = [x for pair in zip(a, b, strict=True) for x in pair]
    parsed = parse_traceback("\n".join(mixed))
    assert parsed is not None and parsed.rank == 0 and parsed.exception == "KeyError"
    assert len(parsed.frames) == 2


def test_ipython_old_format_and_pdb_post_mortem() -> None:
    old = (
        "KeyError                                  Traceback (most recent call last)\n"
        "<ipython-input-3-5c0e5b8e> in <module>()\n"
        "      2 data = load()\n"
        "----> 3 x = data['text']\n"
        "\n"
        "KeyError: 'text'\n"
    )
    parsed = parse_traceback(old)
    assert parsed is not None and parsed.exception == "KeyError"
    assert (
        parsed.frames[0].file.startswith("<ipython-input-3") and parsed.frames[0].code == "x = data['text']"
    )
    pdb = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.11/pdb.py", line 1774, in main\n'
        "    pdb._run(target)\n"
        '  File "/work/train.py", line 12, in main\n'
        "    loss = model(batch)\n"
        "TypeError: forward() missing 1 required positional argument: 'labels'\n"
        "Uncaught exception. Entering post mortem debugging\n"
        "> /work/train.py(12)main()\n"
        "-> loss = model(batch)\n"
        "(Pdb) q\n"
    )
    parsed = parse_traceback(pdb)
    assert parsed is not None and parsed.exception == "TypeError"
    assert parsed.frames[-1].file == "/work/train.py" and parsed.frames[-1].origin == "user"
    assert parsed.frames[0].origin == "stdlib"


def test_script_frames_match_relative_and_elided_paths() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File ".../runs/abc/train.py", line 7, in <module>\n'
        "    trainer.train()\n"
        '  File "/venv/lib/python3.11/site-packages/transformers/trainer.py", line 1, in train\n'
        "    raise ValueError('x')\n"
        "ValueError: x\n"
    )
    parsed = parse_traceback(text)
    assert parsed is not None
    assert [f.line for f in script_frames(parsed, "/home/u/.cache/twinkle/abc/train.py")] == [7]
    assert parsed.frames[-1].package == "transformers" and parsed.frames[-1].origin == "library"


# --- a crash needs frames; a printed error line is not one ---------------------------------------------------
def test_a_handled_error_line_is_not_a_crash() -> None:
    log = "step 16 loss 1.2\nValueError: bad sample 17, skipped\nstep 17 loss 1.1\nstep 18 loss 1.0\n"
    assert classify_error(log) is None
    assert classify_error("step 1\nValueError: bad sample 17, skipped\n", exit_code=0) is None
    assert classify_error("step 1\nValueError: bad sample 17, skipped\n", exit_code=1)["kind"] == "CODE"  # type: ignore[index]


def test_the_message_parser_does_not_swallow_what_follows() -> None:
    lines = [f"step {i} loss {1.0 - i / 100:.3f}" for i in range(25)]
    parsed = parse_traceback("ValueError: bad sample 17, skipped\n" + "\n".join(lines) + "\n")
    assert parsed is not None and parsed.message == "bad sample 17, skipped" and not parsed.final
    after_tb = "\n".join(TB_BODY) + "\nwandb: Waiting for W&B process to finish\nsaving final model\n"
    parsed = parse_traceback(after_tb)
    assert parsed is not None and parsed.message == "'targets'"
    assert parsed.text.rstrip().endswith("KeyError: 'targets'")
    # ... while the real multi-line message at the end of a log is kept whole.
    tail = "RuntimeError: Expected to have finished reduction.\nmaking sure all outputs are used.\n"
    assert classify_error(tail)["message"].endswith("making sure all outputs are used.")  # type: ignore[index]


# --- FIX vs ENV by where the error comes from ----------------------------------------------------------------
SAVE_FRAMES = (
    "Traceback (most recent call last):\n"
    '  File "/work/train.py", line 50, in <module>\n'
    "    trainer.save_model(out)\n"
    '  File "/venv/lib/python3.10/site-packages/torch/serialization.py", line 441, in save\n'
    "    _save(obj, opened_zipfile, pickle_module, pickle_protocol)\n"
)


@pytest.mark.parametrize(
    "error",
    [
        "OSError: [Errno 5] Input/output error",
        "RuntimeError: [enforce fail at inline_container.cc:471] . PytorchStreamWriter failed writing file data/3",
        "RuntimeError: File ./ckpt/checkpoint-100/pytorch_model.bin cannot be opened.",
        "OSError: [Errno 30] Read-only file system: '/data/out'",
    ],
)
def test_write_failures_are_storage(error: str) -> None:
    result = classify_error(SAVE_FRAMES + error + "\n")
    assert result is not None and (result["kind"], result["category"]) == ("ENV", "storage")


def test_cannot_be_opened_on_a_read_path_is_code() -> None:
    load = SAVE_FRAMES.replace("save_model(out)", "load(path)").replace("in save", "in load")
    load = load.replace("_save(obj, opened_zipfile, pickle_module, pickle_protocol)", "return _load(f)")
    result = classify_error(load + "RuntimeError: File ./ckpt/missing.bin cannot be opened.\n")
    assert result is not None and result["kind"] == "CODE"


def test_disk_full_wordings() -> None:
    for line in (
        "OSError: Not enough disk space. Needed: Unknown size",
        "twinkle runtime: cannot write metrics.jsonl: [Errno 28] No space left on device; will keep trying",
    ):
        result = classify_error("step 9\n" + line + "\n")
        assert result is not None and result["category"] == "disk_full", line


SKEW = (
    "Traceback (most recent call last):\n"
    '  File "/root/Qwen/finetune.py", line 363, in train\n'
    "    trainer = Trainer(\n"
    '  File "/env/lib/python3.10/site-packages/transformers/trainer.py", line 3883, in create_accelerator\n'
    "    self.accelerator = Accelerator(\n"
    "TypeError: Accelerator.__init__() got an unexpected keyword argument 'dispatch_batches'\n"
)


def test_version_skew_between_libraries_is_env_with_a_pip_hint() -> None:
    result = classify_error(SKEW)
    assert result is not None and (result["kind"], result["category"]) == ("ENV", "dependency_mismatch")
    assert result["packages"] == ["transformers"] and "pip install -U transformers" in result["hint"]
    assert "Accelerator" in result["between"] and "dependency mismatch" in result["origin"]


def test_the_same_error_from_an_argument_the_user_passes_is_code() -> None:
    script = "trainer = Trainer(model=m, args=a, dispatch_batches=False)\n"
    assert classify_error(SKEW, script=script)["kind"] == "CODE"  # type: ignore[index]
    assert classify_error(SKEW, script={"dispatch_batches": True})["kind"] == "CODE"  # type: ignore[index]
    direct = SKEW.replace("Accelerator.__init__()", "Trainer.__init__()")
    assert classify_error(direct)["kind"] == "CODE"  # type: ignore[index]  # the user's own call
    callback = SKEW.replace("Accelerator.__init__()", "__main__.reward_fn()")
    assert classify_error(callback)["kind"] == "CODE"  # type: ignore[index]
    none_value = SKEW.replace(
        "TypeError: Accelerator.__init__() got an unexpected keyword argument 'dispatch_batches'",
        "AttributeError: 'NoneType' object has no attribute 'pad_token_id'",
    )
    assert classify_error(none_value)["kind"] == "CODE"  # type: ignore[index]


def test_script_mentions_is_small_and_decides_like_the_script() -> None:
    script = "import x\ntrainer = Trainer(dispatch_batches=True)\n"
    mentions = script_mentions(SKEW, script)
    assert mentions is not None and mentions["dispatch_batches"] is True
    assert script_mentions("all good\n", script) is None


def test_a_handled_traceback_the_run_trained_past_is_not_the_crash() -> None:
    handled = "\n".join(TB_BODY) + "\nretrying with the next shard\nstep 18 loss 1.02\nstep 19 loss 1.01\n"
    parsed = parse_traceback(handled)
    assert parsed is not None and parsed.kept_training
    assert classify_error(handled) is None
    assert classify_error(handled + "Killed\n")["category"] == "killed"  # type: ignore[index]
    # A progress bar closing after the crash still shows its last loss: that is not training on.
    crashed = "\n".join(TB_BODY) + "\n 12%|█▏        | 120/1000 [00:30<03:40, 4.0it/s, loss=1.02]\n"
    assert classify_error(crashed)["kind"] == "CODE"  # type: ignore[index]


def test_ray_task_error_defers_to_the_workers_own_traceback() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "/work/driver.py", line 5, in <module>\n'
        "    ray.get(ref)\n"
        '  File "/venv/lib/python3.10/site-packages/ray/_private/worker.py", line 2, in get\n'
        "    raise value.as_instanceof_cause()\n"
        "ray.exceptions.RayTaskError(KeyError): ray::train_fn() (pid=123, ip=10.0.0.1)\n"
        '  File "/work/train.py", line 9, in train_fn\n'
        '    x = batch["text"]\n'
        "KeyError: 'text'\n"
    )
    parsed = parse_traceback(text)
    assert parsed is not None and parsed.exception == "KeyError"
    assert [f.file for f in parsed.frames] == ["/work/train.py"]
