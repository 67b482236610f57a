"""Applying an LLM's minimal patch to train.py: both formats, the sloppiness LLMs show, clear refusals."""

from __future__ import annotations

import re

import pytest

from twinkle_auto.monitor.patching import PatchError, apply_patch, extract_patch, unified_diff

TRAIN_PY = '''\
"""Char-level transformer, reporting to twinkle-auto."""
import torch
import torch.nn as nn

from twinkle_auto.runtime import TrainingRuntime

B, T, V = 16, 64, 65
max_steps = 1000

rt = TrainingRuntime()
rt.start(model_id="char-transformer", config={"max_steps": max_steps}, script_path=__file__)
data = torch.randint(0, V, (100_000,))


class CharModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 128)
        self.head = nn.Linear(128, V)

    def forward(self, x):
        return self.head(self.emb(x))


model = CharModel()
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
start = rt.get_resume_info()["last_step"]

for step in range(start + 1, max_steps + 1):
    ix = torch.randint(len(data) - T - 1, (B,))
    x = torch.stack([data[i : i + T] for i in ix])
    y = torch.stack([data[i + 1 : i + T + 1] for i in ix])
    logits = model(x)
    loss = nn.functional.cross_entropy(logits.view(B, T, V), y.view(B, T))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    rt.log_metrics(step=step, loss=loss.item())

rt.finish()
'''

BAD_LINE = "    loss = nn.functional.cross_entropy(logits.view(B, T, V), y.view(B, T))"
GOOD_LINE = "    loss = nn.functional.cross_entropy(logits.view(B * T, V), y.view(B * T))"
FIXED = TRAIN_PY.replace(BAD_LINE, GOOD_LINE)

SHAPE_FIX = f"""\
<<<<<<< SEARCH
{BAD_LINE}
=======
{GOOD_LINE}
>>>>>>> REPLACE
"""


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


# ------------------------------------------------------------------------------ SEARCH/REPLACE blocks
def test_search_replace_block_applies() -> None:
    assert apply_patch(TRAIN_PY, SHAPE_FIX) == FIXED


def test_several_blocks_apply_in_order() -> None:
    patch = (
        SHAPE_FIX
        + "\n"
        + block(
            "optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)",
            "optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)\nscaler = None",
        )
    )
    new = apply_patch(TRAIN_PY, patch)
    assert GOOD_LINE in new
    assert "lr=3e-4)\nscaler = None\n" in new
    assert len(new.splitlines()) == len(TRAIN_PY.splitlines()) + 1


def test_multiline_block_keeps_the_rest_of_the_script() -> None:
    patch = block(
        "    optimizer.zero_grad()\n    loss.backward()\n    optimizer.step()",
        "    optimizer.zero_grad()\n    loss.backward()\n"
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    optimizer.step()",
    )
    new = apply_patch(TRAIN_PY, patch)
    assert "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    optimizer.step()\n" in new
    assert new.replace("    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n", "") == TRAIN_PY


def test_ambiguous_search_text_is_refused() -> None:
    script = TRAIN_PY.replace("rt.finish()\n", "with torch.no_grad():\n    logits = model(x)\nrt.finish()\n")
    with pytest.raises(PatchError, match=r"^search block 1 is ambiguous: it matches 2 places in train\.py"):
        apply_patch(script, block("    logits = model(x)", "    logits = model(x.long())"))


def test_search_text_found_twice_names_the_lines() -> None:
    script = "a = 1\nprint(a)\nb = 2\nprint(a)\n"
    with pytest.raises(PatchError) as info:
        apply_patch(script, block("print(a)", "print(a, b)"))
    message = str(info.value)
    assert "search block 1 is ambiguous" in message
    assert "lines 2, 4" in message
    assert "\n" not in message


def test_missing_search_text_names_the_block() -> None:
    patch = SHAPE_FIX + block("    scheduler.step()", "    scheduler.step(loss)")
    with pytest.raises(PatchError, match=r"^search block 2 not found in train\.py$"):
        apply_patch(TRAIN_PY, patch)


def test_name_appears_in_messages() -> None:
    with pytest.raises(PatchError, match=r"not found in finetune\.py"):
        apply_patch(TRAIN_PY, block("nothing like this", "x"), name="finetune.py")


def test_trailing_whitespace_differences_are_tolerated() -> None:
    search = "\n".join(line + "   " for line in ["    optimizer.zero_grad()", "    loss.backward()"])
    new = apply_patch(
        TRAIN_PY, block(search, "    optimizer.zero_grad(set_to_none=True)\n    loss.backward()")
    )
    assert "    optimizer.zero_grad(set_to_none=True)\n    loss.backward()\n" in new


def test_script_with_trailing_whitespace_still_matches() -> None:
    script = TRAIN_PY.replace("    optimizer.step()\n", "    optimizer.step()  \n")
    new = apply_patch(script, block("    optimizer.step()", "    optimizer.step()\n    scheduler.step()"))
    assert "    optimizer.step()\n    scheduler.step()\n" in new


def test_search_with_lost_indentation_is_matched_and_replacement_reindented() -> None:
    # LLMs often quote a loop body without its indentation.
    patch = block(
        BAD_LINE.strip() + "\noptimizer.zero_grad()",
        GOOD_LINE.strip() + "\noptimizer.zero_grad()\nif step % 100 == 0:\n    print(step)",
    )
    new = apply_patch(TRAIN_PY, patch)
    assert GOOD_LINE + "\n    optimizer.zero_grad()\n    if step % 100 == 0:\n        print(step)\n" in new


def test_search_with_extra_indentation_is_matched() -> None:
    patch = block("        rt.finish()", "        rt.finish(note='done')")
    assert apply_patch(TRAIN_PY, patch).endswith("\nrt.finish(note='done')\n")


def test_blank_lines_around_search_text_are_tolerated() -> None:
    patch = block("\n    optimizer.step()\n\n", "\n    optimizer.step()\n    optimizer.zero_grad()\n\n")
    new = apply_patch(TRAIN_PY, patch)
    assert "    optimizer.step()\n    optimizer.zero_grad()\n    rt.log_metrics" in new


def test_search_text_that_is_part_of_a_line() -> None:
    new = apply_patch(TRAIN_PY, block("lr=3e-4", "lr=1e-4"))
    assert "torch.optim.AdamW(model.parameters(), lr=1e-4)" in new
    assert new.count("\n") == TRAIN_PY.count("\n")


def test_part_of_a_line_can_be_deleted() -> None:
    new = apply_patch(TRAIN_PY, block(", script_path=__file__", ""))
    assert 'config={"max_steps": max_steps})\n' in new


def test_part_of_a_line_cannot_become_several_lines() -> None:
    with pytest.raises(PatchError, match="matches only part of a line"):
        apply_patch(TRAIN_PY, block("lr=3e-4", "lr=1e-4,\nweight_decay=0.1"))


def test_partial_line_search_must_also_be_unique() -> None:
    with pytest.raises(PatchError, match="ambiguous"):
        apply_patch(TRAIN_PY, block("view(B, T", "view(B * T"))


def test_empty_search_block_is_refused() -> None:
    with pytest.raises(PatchError, match="search block 1 is empty"):
        apply_patch(TRAIN_PY, block("", "import os"))


def test_unclosed_block_is_refused() -> None:
    with pytest.raises(PatchError, match=r"search block 1 is not closed with >>>>>>> REPLACE"):
        apply_patch(TRAIN_PY, f"<<<<<<< SEARCH\n{BAD_LINE}\n=======\n{GOOD_LINE}\n")


def test_block_without_divider_is_refused() -> None:
    with pytest.raises(PatchError, match="search block 1 has no ======="):
        apply_patch(TRAIN_PY, f"<<<<<<< SEARCH\n{BAD_LINE}\n>>>>>>> REPLACE\n")


def test_later_block_may_edit_what_an_earlier_one_wrote() -> None:
    patch = SHAPE_FIX + block(GOOD_LINE, GOOD_LINE.replace("B * T", "-1", 1))
    assert "logits.view(-1, V), y.view(B * T)" in apply_patch(TRAIN_PY, patch)


# --------------------------------------------------------------------------------------- unified diffs
def test_unified_diff_round_trips() -> None:
    diff = unified_diff(TRAIN_PY, FIXED)
    assert diff.startswith("--- a/train.py\n+++ b/train.py\n@@ ")
    assert f"-{BAD_LINE}\n+{GOOD_LINE}\n" in diff
    assert apply_patch(TRAIN_PY, diff) == FIXED


def test_unified_diff_of_identical_texts_is_empty() -> None:
    assert unified_diff(TRAIN_PY, TRAIN_PY) == ""


def test_unified_diff_uses_the_name() -> None:
    assert unified_diff("a\n", "b\n", name="sft.py").startswith("--- a/sft.py\n+++ b/sft.py\n")


def test_unified_diff_with_wrong_line_numbers_applies() -> None:
    diff = re.sub(r"^@@ .* @@$", "@@ -3,7 +3,7 @@", unified_diff(TRAIN_PY, FIXED), flags=re.MULTILINE)
    assert "\n@@ -3,7 +3,7 @@\n" in diff
    assert apply_patch(TRAIN_PY, diff) == FIXED


def test_unified_diff_without_file_headers_or_numbers() -> None:
    diff = f"@@ ... @@\n     logits = model(x)\n-{BAD_LINE}\n+{GOOD_LINE}\n     optimizer.zero_grad()\n"
    assert apply_patch(TRAIN_PY, diff) == FIXED


def test_hunk_header_with_function_context() -> None:
    diff = unified_diff(TRAIN_PY, FIXED).replace(
        " @@\n", " @@ for step in range(start + 1, max_steps + 1):\n"
    )
    assert apply_patch(TRAIN_PY, diff) == FIXED


def test_unified_diff_with_git_headers() -> None:
    diff = "diff --git a/train.py b/train.py\nindex 83db48f..bf269f4 100644\n" + unified_diff(TRAIN_PY, FIXED)
    assert apply_patch(TRAIN_PY, diff) == FIXED


def test_unified_diff_with_several_hunks() -> None:
    new = FIXED.replace("max_steps = 1000\n", "max_steps = 1000\nlog_every = 10\n").replace(
        "rt.finish()\n", "rt.finish(note='ok')\n"
    )
    diff = unified_diff(TRAIN_PY, new)
    assert diff.count("\n@@ ") == 2  # the first hunk header starts the line after +++
    assert apply_patch(TRAIN_PY, diff) == new


def test_hunk_whose_context_does_not_match_is_refused() -> None:
    diff = (
        "--- a/train.py\n+++ b/train.py\n@@ -40,3 +40,3 @@\n"
        f"     logits = model(x, targets=y)\n-{BAD_LINE}\n+{GOOD_LINE}\n"
    )
    with pytest.raises(PatchError, match=r"^hunk 1 does not apply at line 40: "):
        apply_patch(TRAIN_PY, diff)


def test_second_hunk_failing_names_it() -> None:
    diff = unified_diff(TRAIN_PY, FIXED) + "@@ -50,2 +50,2 @@\n-rt.finish(status='done')\n+rt.finish()\n"
    with pytest.raises(PatchError, match=r"hunk 2 does not apply at line 50"):
        apply_patch(TRAIN_PY, diff)


def test_blank_context_lines_that_lost_their_space_still_match() -> None:
    diff = unified_diff(TRAIN_PY, FIXED.replace("model = CharModel()", "model = CharModel().float()"))
    diff = diff.replace("\n \n", "\n\n")  # editors and LLMs strip the lone space of blank context lines
    assert apply_patch(TRAIN_PY, diff) == FIXED.replace("model = CharModel()", "model = CharModel().float()")


def test_ambiguous_hunk_without_line_numbers_is_refused() -> None:
    script = "x = 1\nprint(x)\ny = 2\nprint(x)\n"
    with pytest.raises(PatchError, match="hunk 1 is ambiguous"):
        apply_patch(script, "@@\n-print(x)\n+print(x, flush=True)\n")


def test_ambiguous_hunk_takes_the_place_nearest_its_line_number() -> None:
    script = "x = 1\nprint(x)\ny = 2\nprint(x)\n"
    assert (
        apply_patch(script, "@@ -4,1 +4,1 @@\n-print(x)\n+print(y)\n") == "x = 1\nprint(x)\ny = 2\nprint(y)\n"
    )
    assert (
        apply_patch(script, "@@ -2,1 +2,1 @@\n-print(x)\n+print(y)\n") == "x = 1\nprint(y)\ny = 2\nprint(x)\n"
    )


def test_hunk_with_only_added_lines_is_refused() -> None:
    with pytest.raises(PatchError, match="hunk 1 has no context or removed lines"):
        apply_patch(TRAIN_PY, "@@ -1,0 +1,1 @@\n+import os\n")


# ---------------------------------------------------------------------------------- extracting answers
def test_extract_search_replace_from_fenced_answer_with_prose() -> None:
    answer = (
        "The crash is a shape mismatch: cross_entropy wants (N, C) logits.\n\n"
        "train.py\n```python\n" + SHAPE_FIX + "```\n\nThis flattens batch and time."
    )
    patch = extract_patch(answer)
    assert patch == SHAPE_FIX
    assert apply_patch(TRAIN_PY, patch) == FIXED


def test_extract_joins_blocks_from_several_fences() -> None:
    second = block("rt.finish()", "rt.finish(note='fixed')")
    answer = f"First:\n```\n{SHAPE_FIX}```\nThen:\n```python\n{second}```\nDone."
    patch = extract_patch(answer)
    assert patch == SHAPE_FIX + second
    new = apply_patch(TRAIN_PY, patch)
    assert GOOD_LINE in new and "rt.finish(note='fixed')" in new


def test_extract_diff_from_diff_fence() -> None:
    diff = unified_diff(TRAIN_PY, FIXED)
    answer = f"Here is the fix:\n\n```diff\n{diff}```\n\nIt reshapes logits to (B*T, V)."
    assert extract_patch(answer) == diff
    assert apply_patch(TRAIN_PY, extract_patch(answer)) == FIXED


def test_extract_unfenced_diff_followed_by_prose() -> None:
    diff = unified_diff(TRAIN_PY, FIXED)
    answer = f"Apply this:\n{diff}\nThat flattens the batch."
    assert extract_patch(answer) == diff


def test_apply_accepts_an_unextracted_answer() -> None:
    answer = f"Fix:\n```diff\n{unified_diff(TRAIN_PY, FIXED)}```\nbye"
    assert apply_patch(TRAIN_PY, answer) == FIXED
    assert apply_patch(TRAIN_PY, "Here:\n```\n" + SHAPE_FIX + "```\n") == FIXED


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "I could not find the cause of the crash. Try lowering the learning rate.",
        "```python\nprint('hello')\n```",
        TRAIN_PY,  # a whole script instead of a patch
    ],
)
def test_answer_without_a_patch_is_refused(answer: str) -> None:
    with pytest.raises(PatchError, match="^no patch found in the answer"):
        extract_patch(answer)


def test_garbage_patch_is_refused() -> None:
    with pytest.raises(PatchError, match="neither SEARCH/REPLACE blocks nor a unified diff"):
        apply_patch(TRAIN_PY, "just rewrite line 34 please")


def test_malformed_block_in_answer_is_reported_by_extract() -> None:
    with pytest.raises(PatchError, match="not closed"):
        extract_patch(f"```\n<<<<<<< SEARCH\n{BAD_LINE}\n=======\n{GOOD_LINE}\n```")


# --------------------------------------------------------------------------------- results refused
def test_patch_that_changes_nothing_is_refused() -> None:
    with pytest.raises(PatchError, match=r"the patch changes nothing in train\.py"):
        apply_patch(TRAIN_PY, block(BAD_LINE, BAD_LINE))


def test_patch_that_empties_the_script_is_refused() -> None:
    script = "import torch\nprint(torch.__version__)\n"
    with pytest.raises(PatchError, match=r"leaves train\.py empty"):
        apply_patch(script, block("import torch\nprint(torch.__version__)", ""))


def test_patch_error_is_a_value_error_with_one_line() -> None:
    with pytest.raises(ValueError) as info:
        apply_patch(TRAIN_PY, block("nope", "yes"))
    assert isinstance(info.value, PatchError)
    assert "\n" not in str(info.value)


def test_crlf_scripts_keep_their_line_endings() -> None:
    script = TRAIN_PY.replace("\n", "\r\n")
    new = apply_patch(script, SHAPE_FIX)
    assert new == FIXED.replace("\n", "\r\n")


def test_script_without_final_newline_stays_so() -> None:
    script = TRAIN_PY.rstrip("\n")
    assert apply_patch(script, SHAPE_FIX) == FIXED.rstrip("\n")


def test_original_text_is_never_modified() -> None:
    script = str(TRAIN_PY)
    with pytest.raises(PatchError):
        apply_patch(script, SHAPE_FIX + block("missing", "x"))
    assert script == TRAIN_PY
