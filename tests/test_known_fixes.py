"""Known fixes: each recipe on a real crash (positive) and on look-alikes it must leave alone (negative).

The crashes are real: each script runs in a subprocess, with small local stand-ins of library APIs
(a trainer, a config, a tokenizer) where the real library is not needed to raise the real message.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from twinkle_auto.monitor.known_fixes import RECIPES, find_known_fix

STANDIN = '''\
"""Stand-ins of TRL/transformers APIs with their current signatures."""
from dataclasses import dataclass


@dataclass
class TrainingArguments:
    output_dir: str = "out"
    eval_strategy: str = "no"
    learning_rate: float = 1e-4


@dataclass
class SFTConfig(TrainingArguments):
    dataset_text_field: str = "text"
    max_length: int = 1024


class SFTTrainer:
    def __init__(self, model=None, args=None, train_dataset=None, processing_class=None):
        self.args = args
        self.processing_class = processing_class

    def train(self):
        print("trained", self.args)


class Tokenizer:
    eos_token = "</s>"
    vocab = {"</s>": 2, "a": 5}

    def __init__(self):
        self.pad_token = None

    @property
    def pad_token_id(self):
        return self.vocab.get(self.pad_token)

    @classmethod
    def from_pretrained(cls, name):
        return cls()
'''


def crash(tmp_path: Path, script: str) -> tuple[str, str]:
    """Write and run `script` (dedented) beside the stand-in module; return (script, stderr)."""
    script = textwrap.dedent(script)
    (tmp_path / "standin.py").write_text(STANDIN)
    (tmp_path / "train.py").write_text(script)
    proc = run(tmp_path)
    assert proc.returncode != 0, proc.stdout
    return script, proc.stderr


def run(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(tmp_path / "train.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )


def assert_fixed(tmp_path: Path, script: str, stderr: str, name: str) -> str:
    fix = find_known_fix(script, stderr, script_path=str(tmp_path / "train.py"))
    assert fix is not None and fix.name == name
    assert fix.source.startswith("https://github.com/")
    assert fix.summary.endswith(".") and "\n" not in fix.summary
    (tmp_path / "train.py").write_text(fix.new_script)
    proc = run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    return fix.new_script


def test_catalogue_order() -> None:
    names = [name for name, _ in RECIPES]
    assert names == [
        "renamed keyword",
        "missing pad token",
        "integer tensor in a float op",
        "float64 data into a float32 model",
        "per-token logits to cross_entropy",
        "device mismatch",
    ]


# ---------------------------------------------------------------------------------- renamed keywords
def test_trainer_tokenizer_becomes_processing_class(tmp_path: Path) -> None:
    script, stderr = crash(
        tmp_path,
        """\
        from standin import SFTConfig, SFTTrainer, Tokenizer

        tok = Tokenizer.from_pretrained("m")
        trainer = SFTTrainer(
            model="m",
            args=SFTConfig(output_dir="o"),
            tokenizer=tok,
        )
        trainer.train()
        """,
    )
    assert "unexpected keyword argument 'tokenizer'" in stderr
    new = assert_fixed(tmp_path, script, stderr, "renamed keyword")
    assert "    processing_class=tok,\n" in new
    assert new.replace("processing_class=tok", "tokenizer=tok") == script


def test_evaluation_strategy_becomes_eval_strategy(tmp_path: Path) -> None:
    script, stderr = crash(
        tmp_path,
        """\
        from standin import TrainingArguments
        args = TrainingArguments(output_dir="o", evaluation_strategy="steps")
        print(args)
        """,
    )
    new = assert_fixed(tmp_path, script, stderr, "renamed keyword")
    assert 'eval_strategy="steps"' in new and "evaluation_strategy" not in new


def test_keyword_moved_into_the_config(tmp_path: Path) -> None:
    script, stderr = crash(
        tmp_path,
        """\
        from standin import SFTConfig, SFTTrainer

        config = SFTConfig(output_dir="o", learning_rate=2e-4)
        trainer = SFTTrainer(
            model="m",
            args=config,
            dataset_text_field="content",
        )
        trainer.train()
        """,
    )
    new = assert_fixed(tmp_path, script, stderr, "keyword moved to config")
    assert 'config = SFTConfig(output_dir="o", learning_rate=2e-4, dataset_text_field="content")' in new
    assert "    dataset_text_field" not in new
    assert "dataset_text_field='content'" in run(tmp_path).stdout


def test_unknown_keyword_is_not_guessed(tmp_path: Path) -> None:
    script, stderr = crash(
        tmp_path,
        """\
        from standin import SFTTrainer
        SFTTrainer(model="m", tokenizr="tok")
        """,
    )
    assert find_known_fix(script, stderr, script_path=str(tmp_path / "train.py")) is None


def test_renamed_keyword_needs_the_call_site_in_the_script() -> None:
    # The error names `tokenizer`, but the script never passes it: the failing call is in a library.
    script = "from lib import build\ntrainer = build(model='m')\n"
    log = (
        "Traceback (most recent call last):\n"
        '  File "train.py", line 2, in <module>\n'
        "    trainer = build(model='m')\n"
        '  File "/venv/lib/python3.12/site-packages/lib/__init__.py", line 9, in build\n'
        "    return Trainer(tokenizer=None)\n"
        "TypeError: Trainer.__init__() got an unexpected keyword argument 'tokenizer'\n"
    )
    assert find_known_fix(script, log) is None


def test_both_spellings_present_is_left_to_a_person() -> None:
    script = "t = SFTTrainer(tokenizer=a, processing_class=b)\n"
    log = "File \"train.py\", line 1, in <module>\nTypeError: SFTTrainer.__init__() got an unexpected keyword argument 'tokenizer'\n"
    assert find_known_fix(script, log) is None


# ------------------------------------------------------------------------------------------ pad token
PAD_SCRIPT = """\
import torch
from torch.nn.utils.rnn import pad_sequence
from standin import Tokenizer

tokenizer = Tokenizer.from_pretrained("m")
{extra}seqs = [torch.tensor([5, 5, 5]), torch.tensor([5])]
batch = pad_sequence(seqs, batch_first=True, padding_value=tokenizer.pad_token_id)
print(batch.tolist())
"""


def test_pad_token_is_set_from_eos(tmp_path: Path) -> None:
    script, stderr = crash(tmp_path, PAD_SCRIPT.format(extra=""))
    assert "must be float, not NoneType" in stderr or "NoneType" in stderr
    new = assert_fixed(tmp_path, script, stderr, "missing pad token")
    assert (
        'tokenizer = Tokenizer.from_pretrained("m")\n'
        "if tokenizer.pad_token is None:\n    tokenizer.pad_token = tokenizer.eos_token\n"
    ) in new
    assert "[[5, 5, 5], [5, 2, 2]]" in run(tmp_path).stdout


def test_pad_token_already_handled_is_left_alone(tmp_path: Path) -> None:
    script, stderr = crash(tmp_path, PAD_SCRIPT.format(extra='tokenizer.pad_token = "<unk>"\n'))
    assert find_known_fix(script, stderr, script_path=str(tmp_path / "train.py")) is None


def test_none_padding_without_a_tokenizer_is_not_a_pad_token_fix(tmp_path: Path) -> None:
    script, stderr = crash(
        tmp_path,
        """\
        import torch
        from torch.nn.utils.rnn import pad_sequence
        pad = None
        print(pad_sequence([torch.tensor([1]), torch.tensor([1, 2])], padding_value=pad))
        """,
    )
    assert find_known_fix(script, stderr, script_path=str(tmp_path / "train.py")) is None


# ------------------------------------------------------------------------------------ integer tensors
def test_integer_mean_is_cast_to_float(tmp_path: Path) -> None:
    script, stderr = crash(
        tmp_path,
        """\
        import torch
        preds = torch.tensor([1, 0, 1, 1])
        labels = torch.tensor([1, 1, 1, 0])
        accuracy = (preds == labels).long().mean()
        print(round(accuracy.item(), 3))
        """,
    )
    new = assert_fixed(tmp_path, script, stderr, "integer tensor in a float op")
    assert "accuracy = (preds == labels).long().float().mean()" in new
    assert run(tmp_path).stdout.strip() == "0.5"


def test_integer_std_in_function_form(tmp_path: Path) -> None:
    script, stderr = crash(
        tmp_path,
        """\
        import torch
        counts = torch.tensor([3, 5, 7])
        print(torch.std(counts).item())
        """,
    )
    new = assert_fixed(tmp_path, script, stderr, "integer tensor in a float op")
    assert "torch.std(counts.float())" in new


def test_float64_numpy_data_is_cast_where_the_tensor_is_made(tmp_path: Path) -> None:
    script, stderr = crash(
        tmp_path,
        """\
        import numpy as np
        import torch
        torch.manual_seed(0)
        features = np.ones((8, 3))
        X = torch.from_numpy(features)
        model = torch.nn.Linear(3, 1)
        print(round(model(X).sum().item(), 4))
        """,
    )
    new = assert_fixed(tmp_path, script, stderr, "float64 data into a float32 model")
    assert "X = torch.from_numpy(features).float()" in new
    expected = subprocess.run(
        [sys.executable, "-c", new.replace("torch.from_numpy(features).float()", "torch.ones(8, 3)")],
        capture_output=True,
        text=True,
    ).stdout
    assert run(tmp_path).stdout == expected  # the same numbers as float32 data from the start


def test_float64_data_with_an_explicit_dtype_or_two_sources_is_not_guessed(tmp_path: Path) -> None:
    script, stderr = crash(
        tmp_path,
        """\
        import numpy as np
        import torch
        a = torch.from_numpy(np.ones((4, 3)))
        b = torch.tensor(np.ones((4, 3)))
        model = torch.nn.Linear(3, 1)
        print(model(a + b))
        """,
    )
    assert "Double" in stderr
    assert find_known_fix(script, stderr) is None


def test_two_candidate_calls_on_the_failing_line_are_not_guessed(tmp_path: Path) -> None:
    script, stderr = crash(
        tmp_path,
        """\
        import torch
        a = torch.tensor([1.0, 2.0])
        b = torch.tensor([1, 2])
        print(a.mean() + b.mean())
        """,
    )
    assert find_known_fix(script, stderr, script_path=str(tmp_path / "train.py")) is None


# ------------------------------------------------------------------------------------- device mismatch
DEVICE_SCRIPT = """\
import torch

device = torch.device("meta")  # stands in for "cuda": a device the batch was never moved to
model = torch.nn.Linear(4, 2).to(device)
x = torch.randn(3, 4)
{line}
print(tuple(out.shape), out.device.type)
"""


def test_unmoved_batch_is_moved_to_device(tmp_path: Path) -> None:
    script, stderr = crash(tmp_path, DEVICE_SCRIPT.format(line="out = model(x)"))
    assert "is not on the expected device" in stderr
    new = assert_fixed(tmp_path, script, stderr, "device mismatch")
    assert "out = model(x.to(device))" in new
    assert run(tmp_path).stdout.strip() == "(3, 2) meta"


def test_public_report_of_a_mask_helper_is_fixed_at_the_call_site() -> None:
    # The traceback from https://github.com/SamLynnEvans/Transformer/issues/30 (monitor case 38).
    script = textwrap.dedent(
        """\
        import torch
        from Batch import create_masks

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")


        def train_model(model, opt):
            for i, batch in enumerate(opt.train):
                src = batch.src.transpose(0, 1)
                trg = batch.trg.transpose(0, 1)
                trg_input = trg[:, :-1]
                src_mask, trg_mask = create_masks(src, trg_input, opt)
                preds = model(src, trg_input, src_mask, trg_mask)
        """
    )
    log = (
        "Traceback (most recent call last):\n"
        '  File "train.py", line 12, in train_model\n'
        "    src_mask, trg_mask = create_masks(src, trg_input, opt)\n"
        '  File "/home/lin/program/Transformer-master/Batch.py", line 26, in create_masks\n'
        "    trg_mask = trg_mask & np_mask\n"
        "RuntimeError: Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!\n"
    )
    fix = find_known_fix(script, log)
    assert fix is not None
    assert "create_masks(src.to(device), trg_input.to(device), opt)" in fix.new_script  # opt is no tensor


def test_device_mismatch_without_a_device_in_the_script_is_not_guessed(tmp_path: Path) -> None:
    script, stderr = crash(
        tmp_path,
        """\
        import torch
        model = torch.nn.Linear(4, 2).to("meta")
        x = torch.randn(3, 4)
        out = model(x)
        """,
    )
    assert find_known_fix(script, stderr, script_path=str(tmp_path / "train.py")) is None


def test_already_moved_tensor_is_not_moved_again(tmp_path: Path) -> None:
    # Here the model was never moved; x was. Moving x again would change nothing: no known fix.
    script, stderr = crash(
        tmp_path,
        DEVICE_SCRIPT.format(line="out = model(x)")
        .replace("model = torch.nn.Linear(4, 2).to(device)", "model = torch.nn.Linear(4, 2)")
        .replace("x = torch.randn(3, 4)", "x = torch.randn(3, 4).to(device)"),
    )
    assert "is not on the expected device" in stderr
    assert find_known_fix(script, stderr, script_path=str(tmp_path / "train.py")) is None


@pytest.mark.parametrize("log", ["", "KeyError: 'labels'\n", "RuntimeError: CUDA out of memory.\n"])
def test_unrelated_errors_have_no_known_fix(log: str) -> None:
    assert find_known_fix("import torch\nx = torch.zeros(1)\nprint(x.mean())\n", log) is None


# ------------------------------------------------------------------------------ per-token cross_entropy
def test_per_token_logits_are_flattened_for_cross_entropy(tmp_path: Path) -> None:
    script, stderr = crash(
        tmp_path,
        """\
        import torch
        import torch.nn.functional as F
        torch.manual_seed(0)
        logits = torch.randn(2, 5, 7)
        targets = torch.randint(0, 7, (2, 5))
        loss = F.cross_entropy(logits, targets)
        print(round(loss.item(), 4))
        """,
    )
    new = assert_fixed(tmp_path, script, stderr, "per-token logits to cross_entropy")
    assert "F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))" in new


def test_other_target_size_errors_are_not_flattened(tmp_path: Path) -> None:
    # Batch sizes differ (a data bug, not unflattened logits): no known fix.
    script, stderr = crash(
        tmp_path,
        """\
        import torch
        import torch.nn.functional as F
        logits = torch.randn(4, 3, 6)
        targets = torch.randint(0, 3, (2, 6))
        print(F.cross_entropy(logits, targets))
        """,
    )
    assert "Expected" in stderr
    assert find_known_fix(script, stderr, script_path=str(tmp_path / "train.py")) is None
