"""The chat graph's nodes and routers, as top-level functions (graph.py binds their collaborators).

    repair   answer tool calls left dangling by a cancelled turn or an abandoned question
    agent    call the model on a window of the history; answer malformed tool calls at once
    approve  ask the person (interrupt) about calls that destroy or replace something
    tools    LangGraph's ToolNode, one Send per pending call, with the full state and the context

A tool call whose arguments are not JSON, a tool that raises, a declined call, a cancelled call: each
gets a ToolMessage, so no tool call is ever left unanswered (OpenAI-compatible servers answer 400).
"""

from __future__ import annotations

import inspect
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langgraph.graph import END
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.prebuilt.tool_node import ToolCallWithContext
from langgraph.types import Send, interrupt

from twinkle_auto.graphs.chat import freshness, grounding, run_refs
from twinkle_auto.graphs.chat.context import context_of
from twinkle_auto.graphs.chat.prompts import BUDGET_SPENT, system_prompt
from twinkle_auto.graphs.chat.state import ChatState
from twinkle_auto.graphs.chat.steps import UNDONE, described_not_done, next_step
from twinkle_auto.graphs.chat.streaming import stream_answer
from twinkle_auto.tools.base import Scope, describe_call, is_step_message, message_text, needs_approval

DECLINED = "The person declined this action; it was not run. Ask what they want instead."
CANCELLED = "Cancelled: the person interrupted before this call finished; it may not have run."
MALFORMED = "Error: the arguments of {name} were not valid JSON ({error}); call it again with a JSON object."

Prompt = str | Callable[..., str] | None


# --------------------------------------------------------------------------------------------- helpers
def window(messages: Sequence[AnyMessage], size: int = 50) -> list[AnyMessage]:
    """At most the last `size` messages, moved forward to start on a person's message.

    The window moves in jumps of half its size, not one message at a time: a local server reuses the
    prompt it has read only up to the first token that changed, so a window that drops its oldest
    message at every turn makes it read the whole conversation again each time (4,034 tokens, 180 s on
    two busy cores, measured on the seed conversation's last turn). After a jump the next half window of
    messages only adds to the end. Starting on a HumanMessage guarantees no ToolMessage arrives without
    the AI message that called it; on one the person wrote (not a step message, see steps.py), that the
    model sees what was asked. If the current turn alone is longer than `size`, the whole turn is kept
    (correctness over size).
    """
    msgs = list(messages)
    jump = max(1, size // 2)
    start = 0 if len(msgs) <= size else ((len(msgs) - size) // jump + 1) * jump
    human = [i for i, m in enumerate(msgs) if isinstance(m, HumanMessage) and not is_step_message(m)]
    later = [i for i in human if i >= start]
    if later:
        start = later[0]
    elif human:
        start = human[-1]
    return msgs[start:]


def _answered(messages: Sequence[AnyMessage]) -> set[str]:
    return {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}


def last_ai(messages: Sequence[AnyMessage]) -> AIMessage | None:
    """The AI message of the current step (None once a person has spoken after it)."""
    for msg in reversed(messages):
        if isinstance(msg, AIMessage):
            return msg
        if isinstance(msg, HumanMessage):
            return None
    return None


def pending_calls(messages: Sequence[AnyMessage]) -> list[dict[str, Any]]:
    """Tool calls of the current AI message that have no ToolMessage yet."""
    ai = last_ai(messages)
    if ai is None:
        return []
    answered = _answered(messages)
    return [dict(c) for c in ai.tool_calls if c.get("id") not in answered]


def tool_rounds(messages: Sequence[AnyMessage]) -> int:
    """AI messages with tool calls since the person last spoke: the turn's tool budget used so far."""
    rounds = 0
    for msg in reversed(messages):
        if isinstance(msg, HumanMessage):
            break
        if isinstance(msg, AIMessage) and (msg.tool_calls or msg.invalid_tool_calls):
            rounds += 1
    return rounds


def scope_of(state: Mapping[str, Any], runtime: Any, fallback: Any, name: str = "") -> Scope:
    return Scope(context_of(runtime, fallback), state, None, name)


# ----------------------------------------------------------------------------------------------- nodes
def repair(state: ChatState) -> dict[str, Any]:
    """Answer every tool call that has no result, right after the message that made it.

    A turn cancelled with Ctrl-C, or a question left unanswered when the person typed something else,
    leaves such calls; the model's API refuses a history with them (as deepagents'
    `PatchToolCallsMiddleware` does, but here inside the graph, so every embedding app gets it).
    """
    messages = list(state.get("messages") or [])
    answered = _answered(messages)
    dangling = any(
        c.get("id") and c.get("id") not in answered
        for m in messages
        if isinstance(m, AIMessage)
        for c in (*m.tool_calls, *m.invalid_tool_calls)
    )
    if not dangling:
        return {}
    patched: list[AnyMessage] = []
    for msg in messages:
        patched.append(msg)
        if not isinstance(msg, AIMessage):
            continue
        for call in (*msg.tool_calls, *msg.invalid_tool_calls):
            call_id = call.get("id")
            if not call_id or call_id in answered:
                continue
            name = call.get("name") or "unknown"
            if call.get("type") == "invalid_tool_call":
                content = MALFORMED.format(name=name, error=call.get("error") or "parse error")
            else:
                content = CANCELLED
            patched.append(ToolMessage(content=content, tool_call_id=call_id, name=name, status="error"))
    return {"messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES), *patched]}


def build_system_prompt(prompt: Prompt, state: Mapping[str, Any], runtime: Any, fallback: Any) -> str:
    """The system prompt of this step: a fixed text, a callable (of the state, or of nothing), or ours."""
    if isinstance(prompt, str):
        return prompt
    if callable(prompt):
        takes_state = bool(inspect.signature(prompt).parameters)
        return prompt(state) if takes_state else prompt()
    skills = getattr(context_of(runtime, fallback), "skills", None)
    section = ""
    if skills is not None:
        try:
            section = skills.prompt_section()
        except Exception:  # skills are optional: never block a turn on them
            section = ""
    return system_prompt(section)


def agent(
    state: ChatState,
    runtime: Any = None,
    *,
    llm: BaseChatModel,
    model: Runnable[Any, Any],
    prompt: Prompt = None,
    fallback: Any = None,
    max_tool_rounds: int,
    window_size: int,
    tool_names: frozenset[str] = frozenset(),
    tools: Mapping[str, BaseTool] | None = None,
    forced: Runnable[Any, Any] | None = None,
) -> dict[str, Any]:
    """The model's next step. At the round cap it is called without tools and must answer.

    Tool calls whose arguments are not JSON are answered here at once and the model is asked again
    (each such retry counts as a round), so the graph needs no edge back into this node. An answer that
    is only a tool call written as text (the server did not recognise it) becomes that call when the
    tool exists, and is asked again in plain words once when it does not: the person never reads JSON.

    A request of several steps ("list my runs, then pause the running one") is handed to the model one
    step at a time (steps.py): the first step when the turn begins, the next after each plain answer.
    Each step has its own round budget (rounds count since the last message in the person's voice).

    Before anything runs, calls are held against the conversation (grounding.py): a value nobody gave is
    dropped where the field's default is what the call means, a choice the person's words fix is set to
    it, and a call naming a model, dataset or script nobody named is not kept: the model is asked once
    more with a note saying why (never shown the refused call: it would report it as done), and refused
    again, once more without that tool; refused a third time, nothing runs and the person is asked.

    A words-only answer that repeats figures earlier turns' tools reported, in a turn where nothing was
    read, is asked once more with a tool call required (`forced`: the model with the same tools and
    tool_choice "required"); a call to a tool that only reads replaces it (freshness.py). A step of
    the person's request answered with words that describe it instead of doing it (they name a tool,
    or repeat an earlier answer) is asked once more, with a call required (steps.described_not_done).

    A request or step that points at runs by their state ("pause the one that is running") is sent with
    a note naming the runs in that state now (run_refs.py), until its first tool call. A words-only answer
    after a refusal that copies the note's advice is replaced by what was not done and why.
    """
    messages = list(state.get("messages") or [])
    rounds = tool_rounds(messages)
    system = SystemMessage(build_system_prompt(prompt, state, runtime, fallback))
    out: list[AnyMessage] = []
    if messages and isinstance(messages[-1], HumanMessage) and not is_step_message(messages[-1]):
        first = next_step(messages)
        if first is not None:
            out.append(first)
    extra: list[AnyMessage] = []  # sent once, never kept in the history
    retried = False
    reread = False  # this turn's answer was already sent back for stale figures (once per turn)
    regrounds = 0  # answers of this step sent back for their values (at most MAX_REGROUNDS)
    nudged = False  # this step's words-only answer was already sent back as not done (once per step)
    refusal: list[AnyMessage] = []  # the note of this step's last refused call
    refused_last: list[tuple[str, list[str]]] = []  # and what it refused
    offered = model  # the model with the tools it may call: all, or all but those refused twice
    hint = _state_hint(runtime, fallback, [*messages, *out]) if rounds == 0 else []
    while True:
        sent: list[AnyMessage] = [system, *window([*messages, *out], window_size), *hint, *extra]
        extra = []
        if rounds >= max_tool_rounds:
            sent.append(SystemMessage(BUDGET_SPENT))
            answer = stream_answer(llm, sent)
            if isinstance(answer, AIMessage) and (answer.tool_calls or answer.invalid_tool_calls):
                # a model that calls tools anyway: keep its words, drop the calls nobody would answer
                answer = AIMessage(
                    content=answer.content or "I stopped here: the tool budget for this turn is spent."
                )
        else:
            answer = invoke_repairing_json(offered, sent, plain=llm)
            if offered is forced:
                offered = model  # a call was required for one answer, not for the rest of the step
            pseudo = pseudo_call(answer)
            if pseudo is not None and pseudo[0] in tool_names:
                answer = AIMessage(
                    content="",
                    tool_calls=[
                        {"name": pseudo[0], "args": pseudo[1], "id": f"text-{uuid.uuid4().hex[:12]}"}
                    ],
                )
            elif pseudo is not None and not retried:
                retried = True
                extra = [answer, HumanMessage(NO_SUCH_TOOL.format(name=pseudo[0]))]
                continue
        if tools and isinstance(answer, AIMessage) and answer.tool_calls:
            history = [*messages, *out]
            said, request = grounding.evidence(history), grounding.latest_words(history)
            answer = grounding.amend(answer, tools, said, request)
            runs, selected = _runs(runtime, fallback), state.get("selected_run")
            refused = (
                grounding.refused_calls(answer, tools, said, request, runs, selected)
                if regrounds < MAX_REGROUNDS
                else []
            )
            if refused:
                regrounds += 1
                withheld = sorted({name for name, _ in refused}) if regrounds == MAX_REGROUNDS else []
                only = grounding.run_tools(tools) if withheld and grounding.about_a_run(refused) else []
                if only:
                    # refused twice for starting something new while the person's words name one of
                    # their runs: offered only the tools that act on a run (the 1.5B model otherwise
                    # turns from start_training to start_server)
                    offered = llm.bind_tools([tools[name] for name in only])
                elif withheld:
                    # refused twice: the tool is not what this step needs, or its values are not known
                    # yet; offered the others only, the model picks one of them or asks the person
                    offered = llm.bind_tools([t for name, t in tools.items() if name not in withheld])
                extra = refusal = [
                    HumanMessage(grounding.note(refused, withheld=[] if only else withheld, offered=only))
                ]
                refused_last = refused
                continue
            last = (
                grounding.refused_calls(answer, tools, said, request, runs, selected)
                if regrounds == MAX_REGROUNDS
                else []
            )
            if last:
                # a third answer refused as well: nothing runs, and the person is asked in words what
                # was meant (with what was considered), instead of an approval of a guess
                answer = AIMessage(content=grounding.question(last))
        if (
            tools
            and forced is not None
            and not reread
            and regrounds == 0  # words after a refused call answer that refusal, not the person
            and rounds < max_tool_rounds
            and isinstance(answer, AIMessage)
        ):
            figures = freshness.restated(answer, [*messages, *out])
            if figures:
                reread = True
                try:
                    again: Any = stream_answer(forced, [*sent, HumanMessage(freshness.note(figures))])
                except Exception:  # a server that cannot require a call: the first answer stands
                    again = None
                if freshness.kept_reread(again, tools):
                    answer = again
        if (
            forced is not None
            and not nudged
            and regrounds < MAX_REGROUNDS  # the forced call can still be sent back for its values
            and rounds < max_tool_rounds
            and described_not_done(answer, [*messages, *out], tool_names)
        ):
            # a step talked about, not done: asked once more, with a tool call required and the note
            # of a call refused before it, if any; the answer is not shown (shown, the 1.5B model
            # repeats it), and the call that comes is grounded like any other
            nudged = True
            extra, offered = [*refusal, HumanMessage(UNDONE)], forced
            continue
        if refusal and grounding.echoes(answer):
            # words copied from our note's advice ("ask the person for what they did not give") are no answer
            # the person can read: they are told what was not done and why, in our words
            answer = AIMessage(content=grounding.question(refused_last))
        out.append(answer)
        if not isinstance(answer, AIMessage) or not (answer.tool_calls or answer.invalid_tool_calls):
            step = next_step([*messages, *out])
            if step is None:
                break
            out.append(step)
            rounds, retried, regrounds, offered, nudged, refusal = 0, False, 0, model, False, []
            refused_last = []
            hint = _state_hint(runtime, fallback, [*messages, *out])
            continue
        rounds += 1
        for bad in answer.invalid_tool_calls:
            out.append(
                ToolMessage(
                    content=MALFORMED.format(name=bad.get("name"), error=bad.get("error") or "parse error"),
                    tool_call_id=bad.get("id") or "invalid",
                    name=bad.get("name") or "unknown",
                    status="error",
                )
            )
        if answer.tool_calls:
            break
    return {"messages": out, "tool_rounds": rounds}


def _state_hint(runtime: Any, fallback: Any, messages: Sequence[AnyMessage]) -> list[AnyMessage]:
    """A note naming the runs the request (or its step) points at by their state ("the one that is
    running"), sent with each answer of the step until a tool is called; none when it points at none."""
    last = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
    text = message_text(last) if last is not None else ""
    if not run_refs.referred_states(text):
        return []  # most turns: no state words, so the runs are not read at every turn's start
    note = run_refs.state_note(text, _runs(runtime, fallback))
    return [HumanMessage(note)] if note else []


def _runs(runtime: Any, fallback: Any) -> Mapping[str, str]:
    """The person's runs and, when a check asks, their status (grounding asks whether a request names
    one, and whether an action fits the state of its run); none when unreadable."""
    try:
        scope = Scope(context_of(runtime, fallback))
        store = scope.connection.store
        return grounding.RunBook(
            store.run_ids(), lambda run: store.status(run).effective_status, scope.run_words
        )
    except Exception:  # a check is advice: never let it break a turn
        return {}


MAX_REGROUNDS = 2
"""Times one step's answer is sent back for values nobody gave: once with a note, then without the
refused tools (the 1.5B model resends a refused call word for word; measured on our request set). An
answer refused after that is not run: the person is asked in words (no further model call). It used to
go on to the approval, and "pick grpo-math back up" ended as a proposal to start a 4-GPU server with an
invented model. A third send-back (without the tools refused since) was tried: in a clean-clone
`make test` it doubled the llm_chat subset test (442 s to 889 s), because each one re-reads the prompt
and the refused calls are long."""

NO_SUCH_TOOL = "(There is no tool named {name!r}. Answer my last message in plain words, without JSON.)"
"""Only words: inviting "or another tool" made the 1.5B model answer a greeting with start_training."""
_FENCE_RE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def pseudo_call(answer: Any) -> tuple[str, dict[str, Any]] | None:
    """(name, arguments) when a plain answer is nothing but a tool call written as JSON text."""
    if not isinstance(answer, AIMessage) or answer.tool_calls or answer.invalid_tool_calls:
        return None
    text = answer.content if isinstance(answer.content, str) else ""
    text = text.strip()
    fenced = _FENCE_RE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    args = data.get("arguments", data.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict) or set(data) - {"name", "arguments", "parameters"}:
        return None
    return data["name"], args


MALFORMED_BY_SERVER = ("parse tool call", "tool call arguments", "failed to parse tool")
"""How OpenAI-compatible servers that parse tool calls themselves (llama.cpp) refuse a model's malformed
tool-call JSON: an HTTP 500 instead of a message, so the graph never sees the bad call."""
RETRY_JSON = (
    "Your last reply tried to call a tool, but its arguments were not valid JSON. Call the tool again "
    "with a JSON object of its arguments, or answer in plain text."
)


IN_WORDS = "Answer my last message in plain words, without calling a tool."
UNPARSEABLE = (
    "I could not turn that into a working action: my answer came out malformed three times, so nothing "
    "was done. Could you say it in other words, naming the run, model or data it is about?"
)


def _malformed_by_server(exc: Exception) -> bool:
    return any(m in str(exc).lower() for m in MALFORMED_BY_SERVER)


def invoke_repairing_json(model: Runnable[Any, Any], sent: list[AnyMessage], plain: Any = None) -> Any:
    """The model's answer (streamed, cut when it loops); when the server refused its tool-call JSON, one
    more try with that said, and refused again, an answer in words from `plain` (the model without
    tools), so a question is still answered: the 1.5B model once wrote broken JSON twice for a question
    about LoRA that needed no tool."""
    try:
        return stream_answer(model, sent)
    except Exception as exc:
        if not _malformed_by_server(exc):
            raise
    try:
        return stream_answer(model, [*sent, SystemMessage(RETRY_JSON)])
    except Exception as exc:
        if plain is None or not _malformed_by_server(exc):
            raise
    try:
        return stream_answer(plain, [*sent, SystemMessage(IN_WORDS)])
    except Exception as exc:
        # llama.cpp parses tool calls from the text even when no tool is offered: the model that wrote
        # a call in words is refused again, and the person must still get an answer, not an HTTP 500
        if not _malformed_by_server(exc):
            raise
    return AIMessage(content=UNPARSEABLE)


def _needs_asking(call: Mapping[str, Any], by_name: Mapping[str, BaseTool], approved: set[str]) -> bool:
    tool = by_name.get(str(call.get("name")))
    return tool is not None and needs_approval(tool) is not None and call.get("id") not in approved


def _sends(state: ChatState, calls: list[dict[str, Any]]) -> list[Send]:
    return [
        Send("tools", ToolCallWithContext(__type="tool_call_with_context", tool_call=call, state=state))  # type: ignore[typeddict-item]
        for call in calls
    ]


def route_agent(state: ChatState, *, by_name: Mapping[str, BaseTool], auto_approve: bool) -> str | list[Send]:
    """END when the model answered; approve when a call needs the person; else each call to tools."""
    messages = state.get("messages") or []
    calls = pending_calls(messages)
    if not calls:
        return END
    approved = set(state.get("approved_calls") or [])
    if not auto_approve and any(_needs_asking(c, by_name, approved) for c in calls):
        return "approve"
    return _sends(state, calls)


def route_approved(state: ChatState) -> str | list[Send]:
    """After the person answered: run the approved calls (and any that needed no question), else back
    to the model with the refusals."""
    calls = pending_calls(state.get("messages") or [])
    return _sends(state, calls) if calls else "agent"


def approve(
    state: ChatState, runtime: Any = None, *, by_name: Mapping[str, BaseTool], fallback: Any = None
) -> dict[str, Any]:
    """Ask the person about each call that needs it: approve, reject, or edit its arguments.

    interrupt() re-runs this node on resume, so everything before it only reads. The answer is True /
    False / "y" / "n" for all calls, or {call_id: answer} where an answer is a bool, a word, or
    {"action": "approve" | "reject" | "edit", "args": {…}, "message": "…"}. An edited call is described
    and asked about again (a second interrupt in this node), so the person approves what will run.
    """
    messages = list(state.get("messages") or [])
    approved = set(state.get("approved_calls") or [])
    calls = [c for c in pending_calls(messages) if _needs_asking(c, by_name, approved)]
    if not calls:
        return {}
    scope = scope_of(state, runtime, fallback)
    out: list[AnyMessage] = []
    yes: list[str] = []
    edits: dict[str, dict[str, Any]] = {}
    open_calls = calls
    while open_calls:
        asks = []
        for call in open_calls:
            scope.tool_name = str(call["name"])
            args = edits.get(call["id"], dict(call.get("args") or {}))
            ask = describe_call(by_name[call["name"]], args, scope)
            asks.append({"id": call["id"], "name": call["name"], "args": args, **ask})
        answer = interrupt({"kind": "tool_approval", "calls": asks})
        edited_now = []
        for ask in asks:
            action, args, note = decision(answer, ask["id"])
            if action == "approve":
                yes.append(ask["id"])
            elif action == "edit" and isinstance(args, dict):
                edits[ask["id"]] = args
                edited_now.append(ask["id"])
            else:
                text = DECLINED if not note else f"{DECLINED} They said: {note}"
                out.append(
                    ToolMessage(content=text, tool_call_id=ask["id"], name=ask["name"], status="error")
                )
        open_calls = [c for c in open_calls if c["id"] in edited_now]
    update: dict[str, Any] = {"approved_calls": yes}
    ai = last_ai(messages)
    if edits and ai is not None:
        calls_now = [{**c, "args": edits[c["id"]]} if c.get("id") in edits else c for c in ai.tool_calls]
        out.insert(0, ai.model_copy(update={"tool_calls": calls_now}))  # same id: replaces the message
    if out:
        update["messages"] = out
    return update


def decision(answer: Any, call_id: str) -> tuple[str, Any, str]:
    """(action, edited args, note) of the person's answer for one call; unclear answers reject."""
    if isinstance(answer, Mapping):
        if call_id in answer:
            return decision(answer[call_id], call_id)
        if "action" in answer:
            action = str(answer.get("action")).lower()
            if action in ("approve", "reject", "edit"):
                return action, answer.get("args"), str(answer.get("message") or "")
            return "reject", None, ""
        if "approved" in answer:
            return decision(answer["approved"], call_id)
        return "reject", None, ""
    if isinstance(answer, str):
        ok = answer.strip().lower() in ("y", "yes", "true", "approve", "ok")
        return ("approve" if ok else "reject"), None, ""
    return ("approve" if answer is True else "reject"), None, ""
