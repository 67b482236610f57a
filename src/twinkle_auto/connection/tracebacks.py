"""The one parser of Python tracebacks in a training log: exceptions, their frames, chains and ranks.

Why one parser: the detectors decide FIX/ENV from a traceback and the prompts show one to the LLM; two
finders that disagree send the LLM a harmless shutdown error while the rules judge the real one. This
module lives in `connection/` so both the log tail reader (connection) and the monitor can use it.

Logs are messy, and every shape below comes from real logs:
- prefixes on each line: timestamps and logger fields (`2026-11-30 12:00:01,123 - INFO - `,
  `[2023-06-02 00:34:14,470] [INFO] [engine.py:21:save] `, glog `E1206 12:00:01.1 77 api.py:869] `),
  launcher tags (`[rank3]:`, `[default0]:`, Ray's `(TaskRunner pid=12)`), issue quotes (`> `);
- chained exceptions ("During handling of the above exception ..."): the last one is what killed the
  process, the first one is often why;
- several ranks each printing their traceback, interleaved: the first rank that failed is the cause, the
  others usually die of its absence (NCCL timeouts);
- launchers (torchrun, accelerate, subprocess) ending with a wrapper exception about a child;
- "Exception ignored in:" reports printed at interpreter shutdown, after the real error;
- IPython/Jupyter (`Cell In[3], line 5`, `----> 5 foo()`) and pdb (`> /x/train.py(12)main()`) frames;
- tracebacks cut by a paste or a tail: head missing, or the exception line missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# --- line prefixes -----------------------------------------------------------------------------------------
_LEVEL = r"(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL|NOTICE|TRACE)"
_TIMESTAMP = (
    r"\[?\d{4}[-/]\d\d[-/]\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\]?"
    r"|\[?\d\d:\d\d:\d\d(?:[.,]\d+)?\]?"
)
_PREFIX_PARTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("rank", re.compile(r"\[(?:rank|default)(?P<rank>\d+)\]:\s?")),
    ("rank", re.compile(r"\[1,(?P<rank>\d+)\]<std(?:out|err)>:\s?")),  # Open MPI --tag-output
    ("worker", re.compile(r"\((?P<worker>[\w.-]+ )?pid=(?P<pid>\d+)[^)]*\)\s?")),  # Ray
    ("time", re.compile(rf"(?:{_TIMESTAMP})\s?")),
    ("glog", re.compile(r"[IWEF]\d{4} (?:\d\d:\d\d:\d\d\.\d+\s+\d+\s+)?[\w./-]+:\d+\]\s?")),
    # logger fields after a timestamp: "- INFO - ", "[INFO] ", "name - ERROR - ", "[file.py:21:save] "
    ("level", re.compile(rf"(?:-\s*)?(?:[\w.<>]+\s+-\s+)?\[?{_LEVEL}\]?(?:\s*-\s?|:(?:[\w.]+:)?\s?|\s)")),
    ("level", re.compile(r"\[[\w.]+:\d+:\w+\]\s?")),
    ("level", re.compile(rf"\[{_LEVEL}\|[\w.]+:\d+\]\s?")),  # transformers: "[INFO|trainer.py:1234] "
    ("level", re.compile(rf"\|\s*{_LEVEL}\s*\|\s*(?:[\w.<>-]+:[\w.<>-]+:\d+\s*-\s?)?")),  # loguru
    ("quote", re.compile(r">\s?(?!\s?[\w/.~<-]+\(\d+\))")),  # a "> " quote, but not pdb's "> file(12)func()"
)
_LEVEL_FIRST = re.compile(rf"{_LEVEL}:(?:[\w.]+:)?\s?")
"""`logging.basicConfig`'s default `LEVEL:logger:message`, only at the very start of a line."""


@dataclass(frozen=True)
class Line:
    """One log line with its prefixes taken off; `rank`/`worker` say which process printed it."""

    text: str
    rank: int | None
    worker: str | None
    logged: bool
    """The line carried a logger level field: it is a log record, not part of an exception message."""


def strip_prefixes(line: str) -> Line:
    """Remove launcher, timestamp, logger and quote prefixes, keeping the indentation after them."""
    rank: int | None = None
    worker: str | None = None
    logged = False
    match = _LEVEL_FIRST.match(line)
    if match:
        line, logged = line[match.end() :], True
    changed = True
    while changed and line:
        changed = False
        for kind, pattern in _PREFIX_PARTS:
            match = pattern.match(line)
            if not match or match.end() == 0:
                continue
            if kind == "rank":
                rank = int(match.group("rank"))
            elif kind == "worker":
                worker = (match.group("worker") or "").strip() + f" pid={match.group('pid')}"
            elif kind in ("level", "glog"):
                logged = True
            line = line[match.end() :]
            changed = True
            break
    return Line(line, rank, worker, logged)


# --- line shapes -------------------------------------------------------------------------------------------
_HEADER_RE = re.compile(r"Traceback \(most recent call last\)")
_IPY_HEADER_RE = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)\s{2,}Traceback \(most recent call last\)")
_RULE_RE = re.compile(r"^-{20,}\s*$")
_CHAIN_RE = re.compile(
    r"^(?:During handling of the above exception, another exception occurred"
    r"|The above exception was the direct cause of the following exception):?\s*$"
)
_IGNORED_RE = re.compile(r"^Exception ignored (?:in\b|on calling\b|while\b)")
_EXC_NAME = (
    r"(?:[A-Za-z_]\w*\.)*(?:[A-Z]\w*(?:Error|Exception|Failure|Fault|Interrupt|Exit)"
    r"|StopIteration|StopAsyncIteration|GeneratorExit)"
)
_STRICT_EXC_RE = re.compile(rf"^(?P<name>{_EXC_NAME})(?:\(\w+\))?(?::[ \t]*(?P<msg>.*?))?\s*$")
"""An exception line outside a traceback block: a class name that reads like an exception."""
_LOOSE_EXC_RE = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)(?:\(\w+\))?(?::[ \t]*(?P<msg>.*?))?\s*$")
"""An exception line right after a block's frames: any dotted name, optionally ': message'."""
_FRAME_STD = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)(?:, in (?P<func>.+?))?\s*$')
_FRAME_IPY = re.compile(r"^\s*File (?P<file>\S.*?):(?P<line>\d+)(?:, in (?P<func>.+?))?\s*$")
_FRAME_CELL = re.compile(
    r"^\s*(?P<file>(?:Cell|Input) In ?\[[^\]]*\]), line (?P<line>\d+)(?:, in (?P<func>.+?))?\s*$"
)
_FRAME_IPY_OLD = re.compile(r"^(?P<file>(?:<ipython-input-[^>]+>|\S+\.py)) in (?P<func>[\w<>.]+)\(.*\)\s*$")
_FRAME_PDB = re.compile(r"^>\s?(?P<file>[^\s()][^()]*?)\((?P<line>\d+)\)(?P<func>[\w<>.]*)\(\)\s*$")
_ARROW_RE = re.compile(r"^\s*-*>\s*(?P<line>\d+)\s(?P<code>.*)$")
"""IPython's marker of the executing line, `----> 5 foo()` (or pdb's `-> foo()` without a number)."""
_PDB_ARROW_RE = re.compile(r"^->\s(?P<code>.*)$")
_CONTEXT_LINE_RE = re.compile(r"^\s+\d+\s")
_CARETS_RE = re.compile(r"^\s*[~^]+\s*$")
_ELLIPSIS_RE = re.compile(r"^\s*(?:\.{3,}|…+|\[Previous line repeated \d+ more times?\])\s*$")
_PROGRESS_RE = re.compile(r"\d+%\||\|\s*\d+/\d+\s*\[|\d+/\d+ \[\d")
_RECORD_START_RE = re.compile(r"^(?:\[|={4,}|wandb:|\+ |\*{3,}|\d+%)")
_PROGRESS_LINE_RE = re.compile(
    r"^\{['\"]|\b(?:step|epoch|iter(?:ation)?|loss|lr|batch)\b\s*[:=]?\s*-?\d", re.IGNORECASE
)
"""A line reporting training progress (`step 17 loss 1.1`, `{'loss': ...}`): the process went on."""
_MAX_MESSAGE_LINES = 12
_MAX_LINE_CHARS = 4000
"""Each line is judged on its first 4,000 characters: a 50 MB line of worker noise costs no more."""
_MAX_FRAME_CHARS = 2000
_MAX_NOISE_IN_BLOCK = 40
WRAPPER_EXCEPTIONS = frozenset(
    {"ChildFailedError", "CalledProcessError", "ProcessRaisedException", "RayTaskError", "RayActorError"}
)
"""Exceptions raised by launchers about a child that failed: the child's own traceback says why."""


@dataclass(frozen=True)
class Frame:
    """One stack frame: where it is and the line it was executing (empty when the log does not show it)."""

    file: str
    line: int | None
    function: str
    code: str

    @property
    def origin(self) -> str:
        """'library' (site-/dist-packages, a console script), 'stdlib', 'internal' (<frozen ...>) or 'user'."""
        return frame_origin(self.file)

    @property
    def package(self) -> str | None:
        """The installed package a library frame belongs to (`transformers` for .../site-packages/transformers/x.py)."""
        match = _SITE_RE.search(self.file.replace("\\", "/"))
        if not match:
            return None
        head = match.group("rest").split("/", 1)[0]
        return head[:-3] if head.endswith(".py") else head


_SITE_RE = re.compile(r"/(?:site|dist)-packages/(?P<rest>.+)$")
_STDLIB_RE = re.compile(
    r"/lib/python\d(?:\.\d+)?/(?!site-packages|dist-packages)[^/]+|/python\d+/lib/(?!site-packages)[^/]+",
    re.IGNORECASE,
)
"""The interpreter's own modules: POSIX `.../lib/python3.11/json/x.py`, Windows `...\\Python311\\Lib\\json\\x.py`."""
_CONSOLE_SCRIPT_RE = re.compile(r"/bin/[\w.-]+$")


def frame_origin(file: str) -> str:
    """Classify a frame's file by who wrote it: the user (or their repo) or an installed library."""
    path = file.replace("\\", "/")
    if path.startswith("<") and not path.startswith("<ipython-input"):
        return "internal"
    if _SITE_RE.search(path):
        return "library"
    if _CONSOLE_SCRIPT_RE.search(path) and not path.endswith(".py"):
        return "library"
    if _STDLIB_RE.search(path):
        return "stdlib"
    return "user"


@dataclass(frozen=True)
class ExceptionInfo:
    """One exception of a chain: its class, message and frames (outermost first)."""

    exception: str
    message: str
    frames: tuple[Frame, ...]

    @property
    def short_name(self) -> str:
        return self.exception.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class ParsedTraceback:
    """The exception that decides why a process died, with what led to it.

    `frames` are the deciding exception's frames, outermost first (empty for a bare error line). `context`
    holds the exceptions chained before it, the first (often the cause) first. `span` is the (start, end)
    character range in the parsed text that shows the whole chain. `cut` says the log lost part of it
    (head or exception line); `final` says nothing but blank lines, progress bars or log records follows
    it, i.e. it is the process's last word.
    """

    exception: str
    message: str
    frames: tuple[Frame, ...] = ()
    context: tuple[ExceptionInfo, ...] = ()
    rank: int | None = None
    worker: str | None = None
    span: tuple[int, int] = (0, 0)
    text: str = ""
    cut: bool = False
    final: bool = False
    kept_training: bool = False
    """Training progress lines (`step 17 loss 1.1`, `{'loss': ...}`) follow it in the same process's output:
    the error was handled and the run went on, so it is not why the process ended."""
    ranks_failed: tuple[int, ...] = field(default=())

    @property
    def has_frames(self) -> bool:
        return bool(self.frames)

    @property
    def short_name(self) -> str:
        return self.exception.rsplit(".", 1)[-1]

    @property
    def innermost(self) -> Frame | None:
        return self.frames[-1] if self.frames else None

    @property
    def chain(self) -> tuple[ExceptionInfo, ...]:
        """Every exception of the chain, first to last (the deciding one last)."""
        return (*self.context, ExceptionInfo(self.exception, self.message, self.frames))


@dataclass
class _Block:
    """A traceback being parsed: line indexes are positions in the whole log."""

    start: int
    frames: list[Frame] = field(default_factory=list)
    exception: str | None = None
    message: str = ""
    exc_line: int = -1
    end: int = -1
    ignored: bool = False
    chained_from: _Block | None = None
    headed: bool = True
    stream: tuple[int | None, str | None] = (None, None)


def _frame_of(text: str) -> Frame | None:
    if len(text) > _MAX_FRAME_CHARS:
        return None
    for pattern in (_FRAME_STD, _FRAME_CELL, _FRAME_IPY, _FRAME_PDB):
        match = pattern.match(text)
        if match:
            line = match.groupdict().get("line")
            return Frame(match.group("file"), int(line) if line else None, match.group("func") or "", "")
    match = _FRAME_IPY_OLD.match(text)
    if match:
        return Frame(match.group("file"), None, match.group("func"), "")
    return None


def _with_code(frame: Frame, code: str, line: int | None = None) -> Frame:
    return Frame(frame.file, frame.line if frame.line is not None else line, frame.function, code.strip())


_CHAIN_HEADS = (
    "During handling of the above exception, another exception occurred",
    "The above exception was the direct cause of the following exception",
)


def _cut_chain_marker(text: str) -> bool:
    """A chain marker the log cut short (`During handl`): not part of any message."""
    text = text.strip()
    return len(text) >= 6 and any(head.startswith(text) for head in _CHAIN_HEADS)


def _continues_message(line: Line, exc_line: Line) -> bool:
    text = line.text
    return not (
        _cut_chain_marker(text)
        or not text.strip()
        or (line.logged and not exc_line.logged)
        or _HEADER_RE.search(text)
        or _CHAIN_RE.match(text.strip())
        or _IGNORED_RE.match(text)
        or _PROGRESS_RE.search(text)
        or _RECORD_START_RE.match(text)
        or _PROGRESS_LINE_RE.search(text)
        or _STRICT_EXC_RE.match(text)
        or _frame_of(text)
    )


def _message_end(lines: list[Line], idxs: list[int], pos: int, exc_line: Line) -> int:
    """Position (in `idxs`) of the last line of a multi-line exception message starting at `pos`.

    Python prints a message's own newlines verbatim, so continuation lines exist; but a log goes on after
    an error (training output, launchers, worker shutdown), and those lines are not the message. So an
    indented line continues the message; an unindented one only when it and every line after it, to the
    end of this process's output, could be message text (the last words of a dying process), at most a
    dozen lines.
    """
    end = pos
    last = len(idxs) - 1
    while last > pos and not lines[idxs[last]].text.strip():
        last -= 1
    for k in range(pos + 1, min(len(idxs), pos + 1 + _MAX_MESSAGE_LINES)):
        line = lines[idxs[k]]
        if not _continues_message(line, exc_line):
            break
        if not line.text[:1].isspace():
            rest = range(k, last + 1)
            if last - k >= _MAX_MESSAGE_LINES or not all(
                _continues_message(lines[idxs[j]], exc_line) for j in rest
            ):
                break
            return max(end, last)
        end = k
    return end


def _is_exception(text: str, loose: bool) -> re.Match[str] | None:
    if not text or text[:1].isspace():
        return None
    match = (_LOOSE_EXC_RE if loose else _STRICT_EXC_RE).match(text)
    if not match:
        return None
    if match.group("msg") is None and not _STRICT_EXC_RE.match(text):
        return None  # a bare word after frames is noise, not an exception class
    return match


def _parse_stream(lines: list[Line], idxs: list[int]) -> tuple[list[_Block], list[_Block]]:
    """(traceback blocks, bare exception lines) in one process's lines, in order."""
    blocks: list[_Block] = []
    bare: list[_Block] = []
    pos = 0
    n = len(idxs)
    while pos < n:
        text = lines[idxs[pos]].text
        ipy = _IPY_HEADER_RE.match(text)
        frame = _frame_of(text)
        if _HEADER_RE.search(text) or frame is not None:
            headed = bool(_HEADER_RE.search(text))
            block = _Block(start=idxs[pos], headed=headed)
            if headed and pos > 0 and _RULE_RE.match(lines[idxs[pos - 1]].text):
                block.start = idxs[pos - 1]
            if not headed and pos > 0:  # head cut off: keep a code line just above the first frame
                above = lines[idxs[pos - 1]].text
                if above[:1].isspace() and above.strip() and not blocks and not bare:
                    block.start = idxs[pos - 1]
            ipy_name = ipy.group("name") if ipy else None
            pos = _parse_block(lines, idxs, pos + (1 if headed else 0), block, ipy_name)
            _link_chain(lines, idxs, blocks, block)
            block.ignored = _preceded_by_ignored(lines, idxs, block, blocks)
            blocks.append(block)
            continue
        match = _is_exception(text, loose=False)
        if match:
            end = _message_end(lines, idxs, pos, lines[idxs[pos]])
            msg_lines = [match.group("msg") or ""] + [
                lines[idxs[k]].text.strip() for k in range(pos + 1, end + 1)
            ]
            if match.group("msg") is not None:  # a class name alone on a line is not a crash
                block = _Block(start=idxs[pos], headed=False)
                block.exception, block.message = (
                    match.group("name"),
                    " ".join(m for m in msg_lines if m).strip(),
                )
                block.exc_line, block.end = idxs[pos], idxs[end]
                bare.append(block)
            pos = end + 1
            continue
        pos += 1
    return blocks, bare


def _parse_block(lines: list[Line], idxs: list[int], pos: int, block: _Block, ipy_name: str | None) -> int:
    """Read frames then the exception line of one block; returns the position after it."""
    noise = 0
    n = len(idxs)
    current: Frame | None = None
    while pos < n:
        text = lines[idxs[pos]].text
        frame = _frame_of(text)
        if frame is not None:
            if current is not None:
                block.frames.append(current)
            current, noise = frame, 0
            pos += 1
            continue
        if _HEADER_RE.search(text) or _CHAIN_RE.match(text.strip()):
            break  # the next traceback starts: this one was cut before its exception line
        if not text.strip() or _CARETS_RE.match(text) or _ELLIPSIS_RE.match(text):
            pos += 1
            continue
        arrow = _ARROW_RE.match(text) or _PDB_ARROW_RE.match(text)
        if arrow and current is not None:
            line = arrow.groupdict().get("line")
            current = _with_code(current, arrow.group("code"), int(line) if line else None)
            pos += 1
            continue
        if _CONTEXT_LINE_RE.match(text) and current is not None and ipy_name is not None:
            pos += 1
            continue
        match = _is_exception(text, loose=True) if current is not None or block.frames else None
        if match and not (current is not None and not current.code and text[:1].isspace()):
            if current is not None:
                block.frames.append(current)
                current = None
            end = _message_end(lines, idxs, pos, lines[idxs[pos]])
            extra = [lines[idxs[k]].text.strip() for k in range(pos + 1, end + 1)]
            block.exception = match.group("name")
            block.message = " ".join([match.group("msg") or "", *extra]).strip()
            block.exc_line, block.end = idxs[pos], idxs[end]
            return end + 1
        if current is not None and not current.code:
            current = _with_code(current, text)  # the frame's source line (also unindented, in pastes)
            pos += 1
            continue
        noise += 1
        if noise > _MAX_NOISE_IN_BLOCK or (not text[:1].isspace() and not block.frames and current is None):
            break
        pos += 1
    if current is not None:
        block.frames.append(current)
    if ipy_name is not None and block.exception is None:
        block.exception = ipy_name
    block.end = idxs[min(pos, n) - 1] if pos > 0 else block.start
    return pos


def _link_chain(lines: list[Line], idxs: list[int], blocks: list[_Block], block: _Block) -> None:
    """Mark `block` as chained from the previous one when a 'During handling ...' line sits between them."""
    if not blocks or not block.headed:
        return
    previous = blocks[-1]
    if previous.exception is None:
        return
    between = [lines[i].text.strip() for i in idxs if previous.end < i < block.start]
    words = [t for t in between if t]
    if words and all(_CHAIN_RE.match(t) for t in words):
        block.chained_from = previous


def _preceded_by_ignored(lines: list[Line], idxs: list[int], block: _Block, blocks: list[_Block]) -> bool:
    above = [i for i in idxs if i < block.start]
    for i in reversed(above[-3:]):
        text = lines[i].text.strip()
        if not text:
            continue
        return bool(_IGNORED_RE.match(text))
    return False


# --- choosing the deciding exception ---------------------------------------------------------------------
def _chain_of(block: _Block) -> list[_Block]:
    chain = [block]
    while chain[0].chained_from is not None:
        chain.insert(0, chain[0].chained_from)
    return chain


def _complete(block: _Block) -> _Block | None:
    """The block itself when it has an exception line; for a chain cut before its last exception line,
    the exception it was chained from (the log lost the rest; what it shows is the cause)."""
    if block.exception is not None:
        return block
    return block.chained_from


def _is_final(lines: list[Line], block: _Block, others: list[_Block]) -> bool:
    """Whether nothing but noise follows the block: blank lines, progress bars, log records, and the
    tracebacks that do not decide (shutdown reports, launcher wrappers, cut blocks)."""
    covered = {i for b in others if b is not block for i in range(b.start, max(b.end, b.start) + 1)}
    for i in range(block.end + 1, len(lines)):
        line = lines[i]
        text = line.text.strip()
        if (
            i in covered
            or not text
            or line.logged
            or _PROGRESS_RE.search(text)
            or _RECORD_START_RE.match(text)
            or _IGNORED_RE.match(text)
            or _CHAIN_RE.match(text)
        ):
            continue
        if line.rank != lines[block.exc_line if block.exc_line >= 0 else block.start].rank:
            continue  # another process's output
        return False
    return True


def _kept_training(lines: list[Line], block: _Block, others: list[_Block]) -> bool:
    covered = {i for b in others if b is not block for i in range(b.start, max(b.end, b.start) + 1)}
    rank = lines[block.exc_line if block.exc_line >= 0 else block.start].rank
    for i in range(block.end + 1, len(lines)):
        line = lines[i]
        if i in covered or line.rank not in (rank, None) or _PROGRESS_RE.search(line.text):
            continue  # a progress bar closing after a crash still shows its last loss: not new training
        if _PROGRESS_LINE_RE.search(line.text):
            return True
    return False


def _pick(blocks: list[_Block]) -> _Block | None:
    """The last fatal block of one stream: not an 'Exception ignored' report, not a launcher wrapper, and
    with an exception line (a cut block falls back to its cause or to the complete block before it)."""
    for block in reversed(blocks):
        if block.ignored:
            continue
        chosen = _complete(block)
        if chosen is None:
            continue
        if chosen.exception is not None and chosen.exception.rsplit(".", 1)[-1] in WRAPPER_EXCEPTIONS:
            continue
        return block if block.exception is not None else chosen
    return None


def _decide(lines: list[Line]) -> tuple[_Block | None, list[int], list[_Block]]:
    """(deciding block, ranks that failed, every block found)."""
    streams: dict[tuple[int | None, str | None], list[int]] = {}
    for i, line in enumerate(lines):
        streams.setdefault((line.rank, line.worker), []).append(i)
    per_stream: dict[tuple[int | None, str | None], tuple[list[_Block], list[_Block]]] = {}
    for key, idxs in streams.items():
        blocks, bare = _parse_stream(lines, idxs)
        for b in blocks + bare:
            b.stream = key
        per_stream[key] = (blocks, bare)
    picks = {key: _pick(blocks) for key, (blocks, _) in per_stream.items()}
    picks = {key: b for key, b in picks.items() if b is not None}
    ranked = {key: b for key, b in picks.items() if key[0] is not None or key[1] is not None}
    failed = sorted({key[0] for key in ranked if key[0] is not None})
    plain = picks.get((None, None))
    every = [b for blocks, _ in per_stream.values() for b in blocks]
    all_blocks = [b for b in every if not b.ignored]
    last = max(all_blocks, key=lambda b: b.start, default=None)
    if plain is not None and (
        not ranked or (last is not None and last.stream == (None, None) and last is plain)
    ):
        return plain, failed, every
    if ranked:
        first = min(ranked.values(), key=lambda b: b.exc_line if b.exc_line >= 0 else b.start)
        return first, failed, every
    if plain is not None:
        return plain, failed, every
    bares = [b for _, bare in per_stream.values() for b in bare]
    bares = [b for b in bares if b.exception.rsplit(".", 1)[-1] not in WRAPPER_EXCEPTIONS]
    if bares:
        return max(bares, key=lambda b: b.exc_line), failed, every
    cut = [
        b for b in all_blocks if b.frames and (b.exception or "").rsplit(".", 1)[-1] not in WRAPPER_EXCEPTIONS
    ]
    return (max(cut, key=lambda b: b.start) if cut else None), failed, every


def _offsets(text: str) -> list[int]:
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)
    return starts


def parse_traceback(text: str) -> ParsedTraceback | None:
    """The exception that ended the process whose output is `text`, parsed, or None when there is none.

    With frames when the log shows a traceback; a bare `SomeError: message` line (no frames) is returned
    too, marked by `has_frames == False`, so the caller can decide whether a frameless line is a crash.
    """
    if not text:
        return None
    raw = text.split("\n")
    lines = [strip_prefixes(line[:_MAX_LINE_CHARS].rstrip("\r")) for line in raw]
    block, failed, every = _decide(lines)
    if block is None:
        return None
    chain = _chain_of(block)
    starts = _offsets(text)
    first = chain[0].start
    last_line = max(block.end, block.start)
    start = starts[first]
    end = starts[last_line] + len(raw[last_line])
    context = tuple(ExceptionInfo(b.exception or "", b.message, tuple(b.frames)) for b in chain[:-1])
    return ParsedTraceback(
        exception=block.exception or "",
        message=block.message,
        frames=tuple(block.frames),
        context=context,
        rank=block.stream[0],
        worker=block.stream[1],
        span=(start, end),
        text=text[start:end],
        cut=block.exception is None or not block.headed,
        final=_is_final(lines, block, every),
        kept_training=_kept_training(lines, block, every),
        ranks_failed=tuple(failed),
    )


def traceback_text(text: str) -> str | None:
    """The deciding traceback verbatim (the chain included), or None."""
    parsed = parse_traceback(text)
    return parsed.text.strip("\n") or None if parsed else None


def _same_file(frame_file: str, script_path: str) -> bool:
    a = frame_file.replace("\\", "/").lstrip("./")
    b = script_path.replace("\\", "/").lstrip("./")
    if not a or not b:
        return False
    return (
        a == b or a.endswith("/" + b) or b.endswith("/" + a) or a.rsplit("/", 1)[-1] == b.rsplit("/", 1)[-1]
    )


def script_frames(parsed: ParsedTraceback, script_path: str | None) -> list[Frame]:
    """The deciding exception's frames that run the user's script (outermost first).

    Matched by path, or by file name when the log shows a relative or elided path (`.../train.py`). With
    no script path, every frame outside installed libraries and the standard library counts as the user's.
    """
    if not script_path:
        return [f for f in parsed.frames if f.origin == "user"]
    return [f for f in parsed.frames if _same_file(f.file, script_path)]


def user_frames(parsed: ParsedTraceback) -> list[Frame]:
    """Frames outside installed packages and the standard library: the user's script or repository."""
    return [f for f in parsed.frames if f.origin == "user"]
