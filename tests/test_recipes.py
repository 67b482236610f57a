"""Recipes without running them: every recipe renders valid Python for default and edge parameters, bad
parameters and ids give a one-line RecipeError, ids are resolved (local path, ModelScope via the local
hub stub, offline hub, Twinkle server list) in bounded time."""

from __future__ import annotations

import ast
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import run_cli
from hubserver import HubServer, model_entry
from recipe_data.helpers import GRPO_ROWS, SFT_ROWS, write_jsonl
from stubs.server_helpers import free_port

from twinkle_auto.recipes import (
    RECIPES,
    RecipeError,
    list_recipes,
    render_recipe,
    resolve_dataset,
    resolve_model,
    resolve_served_model,
)
from twinkle_auto.recipes import resolve as resolve_mod


@pytest.fixture
def data(tmp_path: Path) -> dict[str, str]:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return {
        "model": str(model),
        "sft": str(write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS)),
        "grpo": str(write_jsonl(tmp_path / "grpo.jsonl", GRPO_ROWS)),
    }


@pytest.fixture(autouse=True)
def offline_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the real hub: an endpoint that refuses at once, and a fresh down-memory."""
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setitem(resolve_mod._down, "until", 0.0)


def _params(name: str, data: dict[str, str], **extra: object) -> dict[str, object]:
    dataset = data["grpo"] if name.endswith("grpo") else data["sft"]
    if name.startswith("twinkle"):  # a port where no server answers: the model is left unchecked
        return {
            "model": "mock-model",
            "dataset": dataset,
            "server_url": f"http://127.0.0.1:{free_port()}",
            **extra,
        }
    return {"model": data["model"], "dataset": dataset, **extra}


def test_catalogue_fits_one_tool_result() -> None:
    """What list_recipes shows the chat model: whole JSON (never cut), every recipe, shared params once."""
    from twinkle_auto.tools.training import make_training_tools

    tool = next(t for t in make_training_tools() if t.name == "list_recipes")
    shown = json.loads(tool.invoke({}))
    assert [r["name"] for r in shown["recipes"]] == [r.name for r in RECIPES]
    assert shown["params_of_every_recipe"]["dataset"].startswith("required.")
    twinkle = shown["recipes"][0]
    assert twinkle["needs_sampler"] and "server_url" in twinkle["params"] and "model" in twinkle["params"]
    assert "step_sleep" not in json.dumps(shown)  # a knob for tests, not for the model


def test_list_recipes_describes_every_recipe() -> None:
    infos = list_recipes()
    assert [i.name for i in infos] == ["twinkle-grpo", "twinkle-sft", "trl-sft", "trl-grpo", "torch-sft"]
    for info in infos:
        assert info.description and "\n" not in info.description and len(info.description) < 240
        props = info.params_schema["properties"]
        assert set(info.params_schema["required"]) == {"model", "dataset"}
        assert all(props[k].get("description") for k in props), info.name
        assert ("server_url" in props) == info.needs_server
        assert info.needs_sampler == (info.name == "twinkle-grpo")


@pytest.mark.parametrize("name", [r.name for r in RECIPES])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"max_steps": 1, "batch_size": 1, "lr": 1e-9, "save_every": 1, "seed": 2**31 - 1},
        {
            "steps": 10_000_000,
            "learning_rate": 0.5,
            "dataset_subset": 'it\'s "odd"\\n',
            "max_length": 131_072,
        },
    ],
    ids=["defaults", "smallest", "largest-and-aliases"],
)
def test_every_recipe_renders_valid_python(name: str, extra: dict, data: dict[str, str]) -> None:
    rendered = render_recipe(name, _params(name, data, **extra))
    tree = ast.parse(rendered.script)
    assert rendered.name == name
    constants = {
        t.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    # every parameter is one literal constant holding exactly the validated value
    for key, value in rendered.params.items():
        assert ast.literal_eval(constants[key.upper()]) == value, key
    assert "TrainingRuntime" in rendered.script or "TwinkleCallback" in rendered.script
    assert "register_graceful_shutdown" in rendered.script or "TwinkleCallback" in rendered.script
    if "steps" in extra:
        assert rendered.params["max_steps"] == 10_000_000 and rendered.params["lr"] == 0.5


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({}, "missing 'model'"),
        ({"model": "M", "dataset": "D", "lerning_rate": 1}, "unknown parameter 'lerning_rate'"),
        ({"lr": 0}, "lr: Input should be greater than 0"),
        ({"lr": float("nan")}, "lr:"),
        ({"max_steps": 0}, "max_steps: Input should be greater than or equal to 1"),
        ({"batch_size": "many"}, "batch_size:"),
        ({"lora_rank": -1}, "lora_rank:"),
    ],
)
def test_bad_params_give_one_line_errors(params: dict, needle: str, data: dict[str, str]) -> None:
    full = {**_params("torch-sft", data), **params} if params else {}
    with pytest.raises(RecipeError) as info:
        render_recipe("torch-sft", full)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_recipe_specific_rules(data: dict[str, str]) -> None:
    with pytest.raises(RecipeError, match="unknown recipe 'dpo'.*twinkle-grpo"):
        render_recipe("dpo", {})
    with pytest.raises(RecipeError, match="params must be an object"):
        render_recipe("torch-sft", ["model"])  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="num_generations"):
        render_recipe("trl-grpo", _params("trl-grpo", data, num_generations=1))
    with pytest.raises(RecipeError, match="max_new_tokens .* must be below max_length"):
        render_recipe("trl-grpo", _params("trl-grpo", data, max_new_tokens=600, max_length=512))
    with pytest.raises(RecipeError, match="max_new_tokens .* must be below max_length"):
        render_recipe("twinkle-grpo", _params("twinkle-grpo", data, max_new_tokens=512))
    with pytest.raises(RecipeError, match="lora_rank"):
        render_recipe("twinkle-sft", _params("twinkle-sft", data, lora_rank=0))  # the server trains LoRA
    with pytest.raises(RecipeError, match="server_url"):
        render_recipe("twinkle-sft", _params("twinkle-sft", data, server_url="file:///etc/passwd"))
    assert render_recipe("TRL_SFT", _params("trl-sft", data)).name == "trl-sft"


def test_local_paths(data: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_dataset("sft.jsonl").value == data["sft"]  # relative → absolute: the run folder differs
    assert resolve_model("./model").source == "local"
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "weights").mkdir()
    cases = {
        "missing.jsonl": "does not exist",
        "notes.txt": "not .jsonl, .json or .parquet",
        "empty.jsonl": "is empty",
        str(tmp_path): "is a folder; give one .jsonl",
    }
    for ref, needle in cases.items():
        with pytest.raises(RecipeError, match=needle):
            resolve_dataset(ref)
    with pytest.raises(RecipeError, match="has no config.json"):
        resolve_model(str(tmp_path / "weights"))
    with pytest.raises(RecipeError, match="is a file"):
        resolve_model(data["sft"])
    with pytest.raises(RecipeError, match="neither an existing local path nor a ModelScope id"):
        resolve_model("just words here")
    with pytest.raises(RecipeError, match="empty"):
        resolve_model("  ")


def test_hub_ids_checked_on_modelscope(monkeypatch: pytest.MonkeyPatch) -> None:
    with HubServer() as hub:
        hub.models.append(model_entry("Qwen/Qwen2.5-0.5B-Instruct", downloads=10))
        hub.models.append(model_entry("Qwen/Qwen2.5-1.5B-Instruct", downloads=5))
        hub.datasets.append(model_entry("modelscope/gsm8k", task=""))
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
        found = resolve_model("qwen/qwen2.5-0.5b-instruct")
        assert (found.value, found.source) == ("Qwen/Qwen2.5-0.5B-Instruct", "modelscope")
        assert resolve_dataset("ms://modelscope/gsm8k").value == "modelscope/gsm8k"
        with pytest.raises(RecipeError, match=r"ModelScope has no model 'Qwen/Qwen2.5-0.5B-Instrukt'"):
            resolve_model("Qwen/Qwen2.5-0.5B-Instrukt")
        assert hub.hits("models") == 2 and hub.hits("datasets") == 1
        # a bare name: the most downloaded entry of exactly that name
        hub.datasets.append(model_entry("someone/gsm8k", downloads=3, task=""))
        hub.datasets[0]["downloads"] = 900
        bare = resolve_dataset("GSM8K")
        assert bare.value == "modelscope/gsm8k" and "most downloaded of 2" in (bare.note or "")
        with pytest.raises(RecipeError, match="ModelScope has no dataset 'gsm9k'"):
            resolve_dataset("gsm9k")


def test_unreachable_hub_uses_the_id_as_given_and_says_so() -> None:
    first = resolve_model("Qwen/Qwen3.5-4B", timeout=3)
    assert first.source == "unverified" and first.value == "Qwen/Qwen3.5-4B"
    assert first.note and first.note.startswith("could not verify model Qwen/Qwen3.5-4B on ModelScope")
    assert "using it as given" in first.note
    # remembered: the dataset check right after does not wait for the hub again
    second = resolve_dataset("modelscope/gsm8k", timeout=3)
    assert second.source == "unverified" and "using it as given" in (second.note or "")
    with pytest.raises(RecipeError, match="needs its owner .*could not be asked"):
        resolve_dataset("gsm8k")  # a bare name cannot be guessed without the hub


def test_slow_hub_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    with HubServer() as hub:
        hub.slow("models", 30)
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
        resolved = resolve_model("Qwen/Qwen3.5-4B", timeout=1.5)
        assert resolved.source == "unverified" and "using it as given" in (resolved.note or "")


class _Capabilities(BaseHTTPRequestHandler):
    """The two answers of a Twinkle gateway the recipes read: its models, and a sampler replica's health."""

    sampler = False

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"supported_models": [{"model_name": "mock-model"}]}).encode()
        replica = self.sampler and self.path == "/api/v1/sampler/mock-model/healthz"
        self.send_response(200 if self.path == "/api/v1/get_server_capabilities" or replica else 404)
        if replica:
            self.send_header("X-Twinkle-Replica-Id", "r1")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_twinkle_model_checked_against_the_server() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capabilities)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert resolve_served_model("Mock-Model", url).value == "mock-model"
        assert resolve_served_model("someone/mock-model", url).value == "mock-model"  # same name part
        with pytest.raises(RecipeError, match="serves mock-model, not 'Qwen/Qwen3.5-4B'"):
            resolve_served_model("Qwen/Qwen3.5-4B", url)
    finally:
        server.shutdown()
        server.server_close()
    down = resolve_served_model("Qwen/Qwen3.5-4B", f"http://127.0.0.1:{free_port()}")
    assert down.source == "unverified" and "start the server" in (down.note or "")


def test_twinkle_grpo_needs_a_sampler(data: dict[str, str]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capabilities)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/"  # the client's form of the URL
    params = {**_params("twinkle-grpo", data), "server_url": url}
    try:
        with pytest.raises(RecipeError, match="runs no sampler for it"):
            render_recipe("twinkle-grpo", params)
        assert render_recipe("twinkle-sft", {**params, "dataset": data["sft"]}).notes  # SFT needs none
        _Capabilities.sampler = True
        rendered = render_recipe("twinkle-grpo", params)
        assert rendered.params["server_url"] == url.rstrip("/") and "is served at" in rendered.notes[0]
    finally:
        _Capabilities.sampler = False
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("name", [r.name for r in RECIPES])
def test_rendered_scripts_are_pyflakes_clean(name: str, data: dict[str, str]) -> None:
    """No undefined name or unused import in any script (a template bug would otherwise show only at run time)."""
    script = render_recipe(name, _params(name, data, lora_rank=8)).script
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--isolated",
            "--select",
            "F,E9",
            "--stdin-filename",
            "train.py",
            "-",
        ],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:]


def test_recipe_command(data: dict[str, str], tmp_path: Path) -> None:
    """`twinkle-auto recipe`: list, describe, render to a file; bad input is one line and exit 1."""
    listed = run_cli("recipe", "--json")
    assert listed.returncode == 0 and [r["name"] for r in json.loads(listed.stdout)] == [
        r.name for r in RECIPES
    ]
    shown = json.loads(run_cli("recipe", "trl-grpo", "--show-params", "--json").stdout)
    assert {"name": "num_generations", "required": False, "default": 4} in [
        {k: row[k] for k in ("name", "required", "default")} for row in shown
    ]
    out = tmp_path / "train.py"
    made = run_cli(
        "recipe",
        "torch-sft",
        "--set",
        f"model={data['model']}",
        "--set",
        f"dataset={data['sft']}",
        "--set",
        "lr=1e-4",
        "--set",
        "max_steps=7",
        "-o",
        str(out),
        "--json",
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["params"]["lr"] == 1e-4
    tree = ast.parse(out.read_text())
    assert "MAX_STEPS = 7" in out.read_text() and tree.body
    bad = run_cli("recipe", "torch-sft", "--set", f"model={data['model']}", "--set", "dataset=nope.jsonl")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr


def _snippet(name: str) -> dict:
    """A shared template snippet run on its own (what every rendered script pastes in)."""
    from twinkle_auto.recipes.render import template_text

    namespace: dict = {"__name__": "snippet"}
    exec(
        compile("import json, re\nfrom pathlib import Path\n" + template_text(name), name, "exec"), namespace
    )
    return namespace


def test_rewards_read_the_final_answer() -> None:
    ns = _snippet("_rewards")
    accuracy, fmt_reward = ns["accuracy_reward"], ns["format_reward"]
    gsm8k = "Tom has 3 + 4 = 7 apples\n#### 7"
    assert accuracy("so 3 + 4 = 7, the answer is 7", gsm8k) == 1.0
    assert accuracy("The answer is \\boxed{7}. Check: 8 - 1", gsm8k) == 1.0  # boxed beats the last number
    assert accuracy("#### 1,234", "#### 1234") == 1.0 and accuracy("#### 7.0", "#### 7") == 1.0
    assert accuracy("3 + 4 = 8", gsm8k) == 0.0 and accuracy("no number", gsm8k) == 0.0
    assert accuracy("7", None) == 0.0  # no reference answer, no reward
    assert fmt_reward("#### 7") == 1.0 and fmt_reward("\\boxed{ -3 }") == 1.0 and fmt_reward("it is 7") == 0.0


def test_rows_of_every_common_shape(tmp_path: Path) -> None:
    ns = _snippet("_data")
    sft_pair, prompt_answer = ns["sft_pair"], ns["prompt_answer"]
    chat = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"},
        ]
    }
    assert sft_pair(chat) == (chat["messages"][:2], "A")
    share_gpt = {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    assert sft_pair(share_gpt) == ([{"role": "user", "content": "Q"}], "A")
    alpaca = {"instruction": "Translate", "input": "chat", "output": "cat"}
    assert sft_pair(alpaca) == ([{"role": "user", "content": "Translate\nchat"}], "cat")
    assert sft_pair({"text": "plain"}) == ([], "plain")
    assert prompt_answer({"question": "Q?", "answer": "#### 3"}) == ("Q?", "#### 3")
    assert prompt_answer({"problem": "P", "solution": 12}) == ("P", "12")
    assert prompt_answer({"messages": [{"role": "user", "content": "Hi"}]}) == ("Hi", None)
    with pytest.raises(ValueError, match="needs 'messages', 'text'"):
        sft_pair({"foo": 1})
    with pytest.raises(ValueError, match="GRPO row needs a prompt field"):
        prompt_answer({"answer": "3"})
    # the loader: JSON lines (a bad line is named), a JSON list, parquet
    ns["DATASET"] = str(write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}]))
    assert ns["load_rows"]() == [{"text": "a"}, {"text": "b"}]
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{oops\n')
    ns["DATASET"] = str(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="bad.jsonl:2: not a JSON line"):
        ns["load_rows"]()
    (tmp_path / "d.json").write_text(json.dumps([{"text": "c"}]))
    ns["DATASET"] = str(tmp_path / "d.json")
    assert ns["load_rows"]() == [{"text": "c"}]


def test_parquet_rows(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="parquet files need pyarrow (installed with the hf extra)")
    import pyarrow.parquet as pq

    ns = _snippet("_data")
    pq.write_table(pa.Table.from_pylist([{"question": "Q", "answer": "1"}]), tmp_path / "d.parquet")
    ns["DATASET"] = str(tmp_path / "d.parquet")
    assert ns["load_rows"]() == [{"question": "Q", "answer": "1"}]


def test_render_offline_keeps_the_hub_id_and_says_so(data: dict[str, str]) -> None:
    rendered = render_recipe("trl-sft", {"model": "Qwen/Qwen2.5-0.5B-Instruct", "dataset": data["sft"]})
    assert (
        rendered.params["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
        and "MODEL = 'Qwen/Qwen2.5-0.5B-Instruct'" in rendered.script
    )
    assert (
        len(rendered.notes) == 1 and "could not verify model Qwen/Qwen2.5-0.5B-Instruct" in rendered.notes[0]
    )


def test_model_and_dataset_swapped_by_the_chat_model_are_swapped_back_when_the_hub_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from twinkle_auto.tools.training import StartArgs

    swapped = {"recipe": "trl-sft", "model": "modelscope/gsm8k", "dataset": "Qwen/Qwen2.5-0.5B-Instruct"}
    words = "train Qwen/Qwen2.5-0.5B-Instruct with TRL SFT on modelscope/gsm8k"
    # offline (this module's default): only a name's parameter count tells, and it does here
    assert StartArgs.amend(swapped, words) == {
        **swapped,
        **{"model": swapped["dataset"], "dataset": swapped["model"]},
    }
    unsized = {**swapped, "dataset": "someone/chat-data"}
    assert StartArgs.amend(unsized, words) == unsized  # nothing tells which is which: unchanged
    sized_model = {**swapped, "model": "Qwen/Qwen2.5-7B", "dataset": "someone/Qwen2.5-0.5B-distilled"}
    assert StartArgs.amend(sized_model, words) == sized_model  # both sized: the model stays the model
    local = {**swapped, "dataset": "/data/qwen-7b-answers.jsonl"}
    assert StartArgs.amend(local, words) == local  # a file is never a model
    with HubServer() as hub:
        hub.models.append(model_entry("Qwen/Qwen2.5-0.5B-Instruct", downloads=10))
        hub.datasets.append(model_entry("modelscope/gsm8k", task=""))
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
        monkeypatch.setitem(resolve_mod._down, "until", 0.0)
        fixed = StartArgs.amend(swapped, words)
        assert (fixed["model"], fixed["dataset"]) == ("Qwen/Qwen2.5-0.5B-Instruct", "modelscope/gsm8k")
        assert StartArgs.amend(fixed, words) == fixed  # the right way round stays
        # both unknown to the hub as models: not a swap the hub can vouch for
        other = {**swapped, "dataset": "someone/not-a-model"}
        assert StartArgs.amend(other, words) == other
        # the hub knows the dataset as a model, and the "model" as nothing: swapped
        unknown = {**swapped, "model": "someone/unlisted-chat-data"}
        fixed = StartArgs.amend(unknown, words)
        assert (fixed["model"], fixed["dataset"]) == (
            "Qwen/Qwen2.5-0.5B-Instruct",
            "someone/unlisted-chat-data",
        )
        # a served name (mock-model) given as the dataset: the hub has no such dataset, so it is the model
        served = {"recipe": "twinkle-grpo", "model": "modelscope/gsm8k", "dataset": "mock-model"}
        fixed = StartArgs.amend(served, "grpo for mock-model with modelscope/gsm8k")
        assert (fixed["model"], fixed["dataset"]) == ("mock-model", "modelscope/gsm8k")


@contextlib.contextmanager
def _gsm8k_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """The hub stub with the dataset modelscope/gsm8k and the model Qwen/Qwen3.5-4B, in use."""
    with HubServer() as hub:
        hub.datasets.append(model_entry("modelscope/gsm8k", task=""))
        hub.models.append(model_entry("Qwen/Qwen3.5-4B"))
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
        monkeypatch.setitem(resolve_mod._down, "until", 0.0)
        yield hub


def test_a_dataset_given_as_the_model_is_sent_back_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from twinkle_auto.tools.server import StartServerArgs
    from twinkle_auto.tools.training import StartArgs

    words = "grpo on the twinkle server for mock-model with modelscope/gsm8k"
    call = {"recipe": "twinkle-grpo", "model": "modelscope/gsm8k"}
    assert StartArgs.mismatches(call, words) == []  # offline: the hub cannot tell, nothing is said
    with _gsm8k_hub(monkeypatch):
        found = StartArgs.mismatches(call, words)
        assert len(found) == 1 and "'modelscope/gsm8k' is a dataset on ModelScope, not a model" in found[0]
        assert StartArgs.mismatches({**call, "model": "Qwen/Qwen3.5-4B"}, words) == []
        assert StartArgs.mismatches({**call, "model": "mock-model"}, words) == []
        # the server trains and samples models: a dataset there is sent back too, sampler or not
        server = {"model_id": "modelscope/gsm8k", "samplers": [{"model_id": "modelscope/gsm8k"}]}
        found = StartServerArgs.mismatches(server, words)
        assert len(found) == 1 and "model_id='modelscope/gsm8k' is a dataset" in found[0]
        assert StartServerArgs.mismatches({"model_id": "Qwen/Qwen3.5-4B", "backend": "mock"}, words) == []


def test_a_dataset_alone_given_as_the_model_becomes_the_dataset_and_the_model_the_other_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 1.5B model's call for "a GRPO run for mock-model … with modelscope/gsm8k": model=gsm8k and
    no dataset. The hub says which is which; the model is the one other id of the request."""
    from twinkle_auto.tools.training import StartArgs

    words = "kick off a twinkle-grpo run for mock-model on the twinkle server with modelscope/gsm8k"
    call = {"recipe": "twinkle-grpo", "model": "modelscope/gsm8k"}
    assert StartArgs.amend(call, words) == call  # offline: the hub cannot tell, nothing changes
    with _gsm8k_hub(monkeypatch):
        amended = StartArgs.amend(call, words)
        assert amended == {"recipe": "twinkle-grpo", "model": "mock-model", "dataset": "modelscope/gsm8k"}
        both = {**call, "dataset": "modelscope/gsm8k"}  # the dataset in both fields
        assert StartArgs.amend(both, words) == amended
        for_steps = StartArgs.amend(call, words + " for 50 steps at lr 1e-5, a fine-tune of a 0.5B model")
        assert for_steps["model"] == "mock-model"  # numbers, sizes and verbs are no model's name
        hub_model = StartArgs.amend(call, "train Qwen/Qwen3.5-4B with grpo on modelscope/gsm8k")
        assert hub_model["model"] == "Qwen/Qwen3.5-4B" and hub_model["dataset"] == "modelscope/gsm8k"
        # two ids that could be the model: the dataset moves, the model is left for the person to name
        two = StartArgs.amend(call, "grpo for mock-model or tiny-model on modelscope/gsm8k")
        assert two["dataset"] == "modelscope/gsm8k" and two["model"] is None
