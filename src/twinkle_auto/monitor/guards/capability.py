"""Capability guard: what the patched script can *do* that the original could not.

A fix is code an LLM wrote from text an untrusted process printed. Whatever the patch says it fixes, it
must not give the script a new way to act on the machine: start processes, talk to the network, delete
files or change permissions, run code built at run time, load pickles, write outside the run folder, or
change the environment. The guard reads both versions with `ast` and lists every *use* of such a
capability: each reference, with aliases resolved (`import os as o`, `from os import system as s`,
`sp = subprocess`, `f = os.system`) and obfuscation folded (`getattr(__import__("o"+"s"), "sys"+"tem")`,
`__builtins__["exec"]`, `sys.modules["os"]`, base64/rot13/hex-decoded names). A use the original already
had (same capability, same call) is not new; a new call site of an old capability is. Anything it cannot
resolve is refused, not guessed: a computed `getattr` name, a module passed around as a value.
"""

from __future__ import annotations

import ast
import builtins
import functools
import posixpath
import re
from collections import Counter
from dataclasses import dataclass

from twinkle_auto.monitor.guards.ast_util import (
    call_name,
    dotted,
    fold_str,
    index,
    keyword,
    parents,
    single_assignments,
    snippet,
)
from twinkle_auto.monitor.guards.findings import GuardFinding
from twinkle_auto.monitor.guards.rules import RuleSet, Scripts

rules = RuleSet("unsafe")

# ------------------------------------------------------------------------------------------ constants
PURE_MODULES = frozenset(
    {
        "__future__",
        "abc",
        "array",
        "bisect",
        "calendar",
        "cmath",
        "collections",
        "contextlib",
        "copy",
        "dataclasses",
        "datetime",
        "decimal",
        "difflib",
        "enum",
        "fractions",
        "functools",
        "graphlib",
        "hashlib",
        "heapq",
        "itertools",
        "json",
        "keyword",
        "math",
        "numbers",
        "operator",
        "pprint",
        "random",
        "re",
        "statistics",
        "string",
        "struct",
        "textwrap",
        "time",
        "typing",
        "typing_extensions",
        "unicodedata",
        "warnings",
    }
)
"""Modules a fix may import without asking: they compute, they cannot act on the machine. What they
*can* be used for is still checked where it is used (`contextlib.chdir`, `operator.attrgetter` on a
module, `contextlib.suppress` as error swallowing). Not here on purpose: `os`, `sys`, `io`, `pathlib`,
`shutil`, `logging` (file handlers), `types` (builds functions from code objects), `base64`/`codecs`
(decoders that hide code), `uuid` (may run `ifconfig`), `numpy`/`pandas` (file I/O and pickles)."""

PROCESS_MODULES = frozenset(
    {
        "subprocess",
        "pty",
        "pexpect",
        "sh",
        "plumbum",
        "commands",
        "popen2",
        "webbrowser",
        "asyncio.subprocess",
    }
)
PROCESS_OS = re.compile(
    r"^os\.(system|popen\w*|exec\w*|spawn\w*|fork|forkpty|posix_spawnp?|startfile|kill|killpg|setsid)$"
)
PROCESS_NAMES = frozenset(
    {
        "asyncio.create_subprocess_exec",
        "asyncio.create_subprocess_shell",
        "platform.popen",
        "signal.signal",
        "signal.pthread_sigmask",
        "signal.siginterrupt",
        "signal.pthread_kill",
    }
)
"""Also process control: a script that ignores SIGTERM cannot be stopped by twinkle-auto."""

DELETE_NAMES = frozenset(
    {
        "os.remove",
        "os.unlink",
        "os.rmdir",
        "os.removedirs",
        "os.rename",
        "os.renames",
        "os.replace",
        "os.truncate",
        "shutil.rmtree",
        "shutil.move",
    }
)
DELETE_METHODS = frozenset({"unlink", "rmdir"})
"""Path methods whose names mean nothing else, flagged on any receiver."""
PATH_MOVE_METHODS = frozenset({"rename", "replace"})
"""...and ones that also name str/DataFrame methods, flagged on a receiver that is provably a Path."""

PERMISSION_OS = re.compile(
    r"^os\.(chmod|lchmod|fchmod|chown|lchown|fchown|chflags|lchflags|umask|setuid|setgid|seteuid|setegid|"
    r"setreuid|setregid|setresuid|setresgid|chroot)$"
)
PERMISSION_METHODS = frozenset({"chmod", "lchmod", "chown", "lchown"})

NETWORK_MODULES = frozenset(
    {
        "socket",
        "ssl",
        "urllib",
        "urllib3",
        "http",
        "requests",
        "httpx",
        "aiohttp",
        "ftplib",
        "smtplib",
        "telnetlib",
        "poplib",
        "imaplib",
        "nntplib",
        "xmlrpc",
        "socketserver",
        "websocket",
        "websockets",
        "paramiko",
        "pycurl",
        "grpc",
        "torch.hub",
    }
)
NETWORK_PURE = frozenset({"urllib.parse"})
"""Submodules of network packages that only compute (quoting URLs)."""
NETWORK_NAMES = frozenset(
    {
        "asyncio.open_connection",
        "asyncio.start_server",
        "asyncio.open_unix_connection",
        "asyncio.start_unix_server",
    }
)

DYNAMIC_NAMES = frozenset(
    {
        "exec",
        "eval",
        "compile",
        "__import__",
        "globals",
        "locals",
        "breakpoint",
        "builtins",
        "sys.modules",
        "sys._getframe",
        "inspect.currentframe",
        "types.FunctionType",
        "types.CodeType",
        "types.LambdaType",
        "types.ModuleType",
        "pydoc.locate",
    }
)
DYNAMIC_MODULES = frozenset(
    {"importlib", "runpy", "code", "codeop", "ctypes", "cffi", "imp", "pkgutil", "torch.utils.cpp_extension"}
)
DANGEROUS_ATTRIBUTES = frozenset(
    {
        "__builtins__",
        "__import__",
        "__globals__",
        "__subclasses__",
        "__code__",
        "__closure__",
        "__getattribute__",
        "__mro__",
        "__bases__",
        "__base__",
        "__loader__",
        "__spec__",
        "__reduce__",
        "__reduce_ex__",
        "__setstate__",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "gi_frame",
        "tb_frame",
    }
)
"""Attributes that reach interpreter internals: the classic ways out of any name-based check."""

PICKLE_MODULES = frozenset(
    {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "jsonpickle", "shelve", "marshal"}
)
PICKLE_FUNCTIONS = frozenset({"load", "loads", "Unpickler", "open", "decode"})
DESERIALIZE_NAMES = frozenset(
    {
        "joblib.load",
        "pandas.read_pickle",
        "yaml.unsafe_load",
        "yaml.unsafe_load_all",
        "yaml.full_load",
        "yaml.full_load_all",
    }
)
SAFE_YAML_LOADERS = frozenset({"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"})

ENV_NAMES = frozenset({"os.putenv", "os.unsetenv"})
ENVIRON = frozenset({"os.environ", "os.environb"})
ENV_METHODS = frozenset({"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"})

CWD_NAMES = frozenset({"os.chdir", "os.fchdir", "contextlib.chdir"})
"""Changing the working directory moves every relative path, so it counts as writing elsewhere."""

OPEN_FUNCTIONS = frozenset({"open", "io.open", "io.FileIO", "codecs.open", "os.fdopen"})
COPY_FUNCTIONS = frozenset({"shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree"})
LINK_FUNCTIONS = frozenset({"os.symlink", "os.link"})
SAVE_FUNCTIONS = {
    "torch.save": (1, "f"),
    "numpy.save": (0, "file"),
    "numpy.savez": (0, "file"),
    "numpy.savez_compressed": (0, "file"),
    "numpy.savetxt": (0, "fname"),
    "logging.FileHandler": (0, "filename"),
    "logging.basicConfig": (None, "filename"),
    "shutil.make_archive": (0, "base_name"),
    "shutil.unpack_archive": (1, "extract_dir"),
}
"""Library functions that write a file: (position, keyword) of the path argument."""
SAVE_METHODS = {
    "save_pretrained": (0, "save_directory"),
    "save_model": (0, "output_dir"),
    "to_csv": (0, "path_or_buf"),
    "to_json": (0, "path_or_buf"),
    "to_parquet": (0, "path"),
    "to_pickle": (0, "path"),
    "savefig": (0, "fname"),
    "write_text": (None, None),
    "write_bytes": (None, None),
    "symlink_to": (None, None),
    "hardlink_to": (None, None),
}
"""Methods that write where their path argument (or, for None, their receiver) says."""
OUTPUT_KEYWORDS = frozenset(
    {"output_dir", "logging_dir", "save_dir", "checkpoint_dir", "ckpt_dir", "log_dir", "out_dir"}
)
"""Keyword arguments that tell a library where to write (`SFTConfig(output_dir=...)`)."""
PATH_CONSTRUCTORS = frozenset(
    {"pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "pathlib.PurePosixPath", "os.path.join"}
)
PATH_PASSTHROUGH = frozenset({"str", "os.fspath", "os.path.abspath", "os.path.realpath", "os.path.normpath"})
PATH_METHODS_SAME = frozenset({"resolve", "absolute", "with_suffix", "with_stem", "with_name", "expanduser"})
TRUSTED_MODULES = frozenset({"twinkle_auto.runtime"})
"""Our own runtime, which training scripts import to report: it writes only into the run folder."""

BUILTIN_NAMES = frozenset(dir(builtins))
URL = re.compile(r"^(https?|ftps?|s3|gs|wss?|ssh|sftp)://", re.IGNORECASE)
"""A literal URL handed to any call (`pd.read_csv("http://...")`) reaches the network through it."""


def _string_args(node: ast.Call) -> list[str]:
    values = [*node.args, *(kw.value for kw in node.keywords)]
    return [v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)]


@dataclass(frozen=True)
class Use:
    """One use of a capability: `rule` is the finding's rule id, `what` names it for a person."""

    rule: str
    what: str
    signature: str
    line: int


# ----------------------------------------------------------------------------------- name resolution
class _Resolver:
    """Resolves expressions to the dotted names of what they refer to (`o.system` → `os.system`).

    Flow-insensitive on purpose: a name assigned a module anywhere refers to it everywhere, so no order
    of statements hides an alias. Results are sets because a name can be bound to several things.
    """

    def __init__(self, tree: ast.AST) -> None:
        self.tree = tree
        self.nodes = index(tree).nodes
        self.parent_of = parents(tree)
        self.constants = single_assignments(tree)
        self.aliases: dict[str, set[str]] = {}
        self.star_modules: list[str] = []
        self.defined: set[str] = set()
        self.stored: set[str] = set()
        self.memo: dict[int, frozenset[str]] = {}
        self._collect()

    def _collect(self) -> None:
        assignments: list[tuple[str, ast.expr]] = []
        idx = index(self.tree)
        wanted = (
            ast.Import,
            ast.ImportFrom,
            ast.FunctionDef,
            ast.AsyncFunctionDef,
            ast.ClassDef,
            ast.Assign,
            ast.AnnAssign,
            ast.NamedExpr,
            ast.Name,
            ast.arg,
        )
        for node in [node for kind in wanted for node in idx.of_type(kind)]:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.aliases.setdefault(alias.asname, set()).add(alias.name)
                    else:
                        top = alias.name.split(".")[0]
                        self.aliases.setdefault(top, set()).add(top)
            elif isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                for alias in node.names:
                    if alias.name == "*":
                        self.star_modules.append(module)
                    else:
                        self.aliases.setdefault(alias.asname or alias.name, set()).add(
                            f"{module}.{alias.name}"
                        )
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.defined.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    assignments.extend(_pairs(target, node.value))
            elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                assignments.extend(_pairs(node.target, node.value))
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                self.stored.add(node.id)
            elif isinstance(node, ast.arg):
                self.stored.add(node.arg)
        for _ in range(4):  # aliases of aliases: `a = os; b = a`
            changed = False
            self.memo.clear()
            for name, value in assignments:
                targets = self.resolve(value)
                known = self.aliases.setdefault(name, set())
                if not targets <= known:
                    known |= targets
                    changed = True
            if not changed:
                break
        self.memo.clear()

    def resolve(self, node: ast.AST) -> frozenset[str]:
        key = id(node)
        if key not in self.memo:
            self.memo[key] = frozenset()  # cycles resolve to nothing
            self.memo[key] = frozenset(_normal(name) for name in self._resolve(node))
        return self.memo[key]

    def _resolve(self, node: ast.AST) -> set[str]:
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.Attribute):
            if node.attr == "__dict__":
                return set()
            return {f"{base}.{node.attr}" for base in self.resolve(node.value)}
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.NamedExpr):
            return set(self.resolve(node.value))
        if isinstance(node, ast.IfExp):
            return set(self.resolve(node.body) | self.resolve(node.orelse))
        if isinstance(node, ast.BoolOp):
            return {name for value in node.values for name in self.resolve(value)}
        if isinstance(node, ast.Lambda):
            return set()
        return set()

    def _name(self, name: str) -> set[str]:
        if name in self.aliases and self.aliases[name]:
            return set(self.aliases[name])
        if name == "__builtins__":
            return {"builtins"}
        if name in self.defined:
            return set()
        if name in BUILTIN_NAMES:
            return {name}
        if self.star_modules and name not in self.stored and name not in self.aliases:
            return {f"{module}.{name}" for module in self.star_modules}
        return set()

    def _subscript(self, node: ast.Subscript) -> set[str]:
        key = fold_str(node.slice, self.constants)
        value = node.value
        if key is None:
            return set()
        if isinstance(value, ast.Attribute) and value.attr == "__dict__":
            return {f"{base}.{key}" for base in self.resolve(value.value)}
        if isinstance(value, ast.Call):
            func = self.resolve(value.func)
            if func & {"globals", "locals", "vars"} and not value.args:
                return self._name(key)
            if "vars" in func and len(value.args) == 1:
                return {f"{base}.{key}" for base in self.resolve(value.args[0])}
        bases = self.resolve(value)
        if bases & {"sys.modules", "builtins"}:
            return {key}
        return set()

    def _call(self, node: ast.Call) -> set[str]:
        if isinstance(node.func, ast.Lambda):
            return set(self.resolve(node.func.body))
        func = self.resolve(node.func)
        args = node.args
        if "getattr" in func and 2 <= len(args) <= 3:
            key = fold_str(args[1], self.constants)
            return {f"{base}.{key}" for base in self.resolve(args[0])} if key else set()
        if func & {"__import__", "importlib.__import__"} and args:
            key = fold_str(args[0], self.constants)
            if key is None:
                return set()
            return {key} if len(args) >= 4 or keyword(node, "fromlist") is not None else {key.split(".")[0]}
        if "importlib.import_module" in func and args:
            key = fold_str(args[0], self.constants)
            return {key} if key else set()
        if isinstance(node.func, ast.Call) and "operator.attrgetter" in self.resolve(node.func.func):
            inner = node.func.args
            key = fold_str(inner[0], self.constants) if len(inner) == 1 else None
            return {f"{base}.{key}" for base in self.resolve(args[0])} if key and args else set()
        return set()


def _pairs(target: ast.AST, value: ast.expr) -> list[tuple[str, ast.expr]]:
    """(name, value) for each simple name a statement binds: `a = x`, `a, b = x, y`, `a = b = x`."""
    if isinstance(target, ast.Name):
        return [(target.id, value)]
    same_shape = isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List))
    if same_shape and len(target.elts) == len(value.elts):
        return [pair for t, v in zip(target.elts, value.elts) for pair in _pairs(t, v)]
    return []


def _normal(name: str) -> str:
    while name.startswith("builtins."):
        name = name[len("builtins.") :]
    return name


def _under(name: str, modules: frozenset[str]) -> bool:
    return any(name == module or name.startswith(module + ".") for module in modules)


@functools.lru_cache(maxsize=4096)
def classify(name: str) -> str | None:
    """The rule a resolved name falls under, or None for a name with no capability.

    A module re-exported by another (`os.path.os.system`, `platform.os.system`, `torch.os.system`) is
    the same module: every suffix that starts at a risky module's name is classified too."""
    rule = _classify(name)
    if rule is not None:
        return rule
    parts = name.split(".")
    for i in range(1, len(parts)):
        if parts[i] in RISKY_MODULES:
            rule = _classify(".".join(parts[i:]))
            if rule is not None:
                return rule
    return None


def _classify(name: str) -> str | None:
    if _under(name, PROCESS_MODULES) or PROCESS_OS.match(name) or name in PROCESS_NAMES:
        return "process-call"
    if name in DELETE_NAMES:
        return "file-delete"
    if PERMISSION_OS.match(name) or name == "shutil.chown":
        return "permission-change"
    if (_under(name, NETWORK_MODULES) and not _under(name, NETWORK_PURE)) or name in NETWORK_NAMES:
        return "network"
    if name in DESERIALIZE_NAMES:
        return "deserialize"
    module, _, function = name.rpartition(".")
    if module in PICKLE_MODULES and function in PICKLE_FUNCTIONS:
        return "deserialize"
    if name in DYNAMIC_NAMES or _under(name, DYNAMIC_MODULES):
        return "dynamic-code"
    if any(part in DANGEROUS_ATTRIBUTES for part in name.split(".")):
        return "dynamic-code"
    if name in ENV_NAMES:
        return "env-mutation"
    if name in CWD_NAMES:
        return "write-outside-run"
    return None


RISKY_MODULES = frozenset(
    {
        "os",
        "sys",
        "io",
        "shutil",
        "pathlib",
        "builtins",
        *PROCESS_MODULES,
        *NETWORK_MODULES,
        *DYNAMIC_MODULES,
        *PICKLE_MODULES,
    }
)
"""Modules whose object, passed around as a value, could reach a capability by a name we cannot see."""


# ------------------------------------------------------------------------------------------- paths
class _Paths:
    """Decides whether a path expression is provably inside the run folder.

    Provable means: a literal relative path without `..` (the script runs in its run folder), a literal
    absolute path under `run_dir`, a path built from a name the original script already wrote to (its
    output dir), or the script's own folder (`os.path.dirname(__file__)`); then joined only with parts
    that cannot climb out (`..`) or restart at the root (an absolute part in a join).
    """

    def __init__(self, resolver: _Resolver, roots: set[str], run_dir: str | None) -> None:
        self.r = resolver
        self.roots = roots
        self.run_dir = posixpath.normpath(run_dir) if run_dir else None
        self.runtimes: set[str] = set()
        """Names bound to a TrainingRuntime: its `run_dir` is the run folder by definition."""
        self.handles: set[str] = set()
        """Names bound to an opened file (`with open(...) as f`): writing to them is judged at the open."""
        moved: set[str] = set()
        for node in index(resolver.tree).nodes:
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "run_dir"
                and not isinstance(node.ctx, ast.Load)
            ):
                moved.add(dotted(node.value))  # `rt.run_dir = "/etc"`: no longer the run folder
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                if call_name(node.value) == "TrainingRuntime":
                    self.runtimes |= names
                elif resolver.resolve(node.value.func) & OPEN_FUNCTIONS:
                    self.handles |= names
            elif isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name):
                expr = node.context_expr
                if isinstance(expr, ast.Call) and (
                    resolver.resolve(expr.func) & OPEN_FUNCTIONS
                    or (isinstance(expr.func, ast.Attribute) and expr.func.attr == "open")
                ):
                    self.handles.add(node.optional_vars.id)
        self.runtimes -= moved

    def literal_ok(self, text: str) -> bool:
        parts = re.split(r"[\\/]+", text)
        if ".." in parts or not text:
            return False
        if text.startswith(("/", "\\")):
            return self.run_dir is not None and (posixpath.normpath(text) + "/").startswith(
                self.run_dir + "/"
            )
        return not text.startswith("~") and not re.match(r"^[A-Za-z]:", text)

    def inside(self, node: ast.AST | None, depth: int = 0) -> bool:
        if node is None or depth > 12:
            return False
        text = ast.unparse(node)
        if text in self.roots:
            return True
        if isinstance(node, ast.Name) and node.id in self.handles:
            return True
        if isinstance(node, ast.Attribute) and node.attr == "run_dir" and dotted(node.value) in self.runtimes:
            return True
        folded = fold_str(node, self.r.constants)
        if folded is not None:
            return self.literal_ok(folded)
        if isinstance(node, ast.Name) and node.id in self.r.constants:
            return self.inside(self.r.constants[node.id], depth + 1)
        if isinstance(node, ast.JoinedStr) and node.values:
            first, rest = node.values[0], node.values[1:]
            head = first.value if isinstance(first, ast.FormattedValue) else first
            return self.inside(head, depth + 1) and all(self.tail_ok(part) for part in rest)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.inside(node.left, depth + 1) and self.tail_ok(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self.inside(node.left, depth + 1) and self.part_ok(node.right)
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            return self.script_dir(node.value)
        if isinstance(node, ast.Call):
            func = self.r.resolve(node.func)
            if func & PATH_CONSTRUCTORS and node.args:
                return self.inside(node.args[0], depth + 1) and all(self.part_ok(a) for a in node.args[1:])
            if func & PATH_PASSTHROUGH and len(node.args) == 1:
                return self.inside(node.args[0], depth + 1)
            if "os.path.dirname" in func and len(node.args) == 1:
                return self.script_dir(node.args[0])
            if isinstance(node.func, ast.Attribute):
                method, base = node.func.attr, node.func.value
                if method in PATH_METHODS_SAME - {"with_name"}:
                    return self.inside(base, depth + 1)
                if method == "with_name":
                    return self.inside(base, depth + 1) and all(
                        self.part_ok(a) and "/" not in (fold_str(a, self.r.constants) or "")
                        for a in node.args
                    )
                if method == "joinpath":
                    return self.inside(base, depth + 1) and all(self.part_ok(a) for a in node.args)
        return False

    def script_dir(self, node: ast.AST) -> bool:
        """`__file__`, possibly made absolute: its folder is the run folder (train.py lives there)."""
        if isinstance(node, ast.Name) and node.id == "__file__":
            return True
        if isinstance(node, ast.Call):
            func = self.r.resolve(node.func)
            if func & (PATH_PASSTHROUGH | PATH_CONSTRUCTORS) and len(node.args) == 1:
                return self.script_dir(node.args[0])
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("resolve", "absolute"):
                return self.script_dir(node.func.value)
        return False

    def part_ok(self, node: ast.AST) -> bool:
        """A later part of a join: relative and without `..` when known; a plain runtime name otherwise."""
        folded = fold_str(node, self.r.constants)
        if folded is not None:
            return self.literal_ok(folded)
        if isinstance(node, ast.JoinedStr):
            first = node.values[0] if node.values else None
            return (
                isinstance(first, ast.Constant)
                and self.literal_ok(str(first.value))
                and all(self.tail_ok(part) for part in node.values[1:])
            )
        return isinstance(node, (ast.Name, ast.Attribute))

    def tail_ok(self, node: ast.AST) -> bool:
        """A piece concatenated after the start of a path: it must not add `..`."""
        value = node.value if isinstance(node, ast.FormattedValue) else node
        folded = fold_str(value, self.r.constants)
        if folded is not None:
            return ".." not in re.split(r"[\\/]+", folded)
        if isinstance(value, ast.Call):  # `os.getpid()`, `str(step)`: runtime values built from no text
            return not any(
                isinstance(n, ast.Constant) and isinstance(n.value, (str, bytes)) for n in ast.walk(value)
            )
        return isinstance(value, (ast.Name, ast.Attribute))


def _root(node: ast.AST | None) -> str | None:
    """The name a path expression starts from (`out_dir` in `os.path.join(out_dir, "x")`)."""
    if node is None:
        return None
    if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)):
        return ast.unparse(node)
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.FormattedValue):
        return _root(node.values[0].value)
    if isinstance(node, ast.BinOp):
        return _root(node.left)
    if isinstance(node, ast.Call):
        if node.args and (dotted(node.func) in ("os.path.join", "Path", "pathlib.Path", "str", "os.fspath")):
            return _root(node.args[0])
        if isinstance(node.func, ast.Attribute) and node.func.attr in PATH_METHODS_SAME | {"joinpath"}:
            return _root(node.func.value)
    return None


# -------------------------------------------------------------------------------------- the analysis
class _Analysis:
    """Every capability use in one script."""

    def __init__(self, tree: ast.AST, run_dir: str | None, roots: set[str] | None = None) -> None:
        self.tree = tree
        self.r = _Resolver(tree)
        self.writes: list[tuple[ast.Call, ast.AST | None, str]] = []
        self.dirs: list[ast.AST] = []
        self._find_writes()
        self.paths = _Paths(self.r, roots if roots is not None else set(), run_dir)

    # --- writes
    def _find_writes(self) -> None:
        for node in index(self.tree).of_type(ast.Call):
            assert isinstance(node, ast.Call)
            func = self.r.resolve(node.func)
            target = self._write_target(node, func)
            if target is not None:
                self.writes.append((node, target[0], target[1]))
                continue
            if func & {"os.makedirs", "os.mkdir"} and node.args:
                self.dirs.append(node.args[0])
            elif isinstance(node.func, ast.Attribute) and node.func.attr == "mkdir":
                self.dirs.append(node.func.value)
            for kw in node.keywords:
                if kw.arg in OUTPUT_KEYWORDS:
                    self.writes.append((node, kw.value, f"{kw.arg}={snippet(kw.value, 40)}"))

    def _write_target(self, node: ast.Call, func: frozenset[str]) -> tuple[ast.AST | None, str] | None:
        def arg(position: int | None, name: str | None) -> ast.AST | None:
            if position is not None and len(node.args) > position:
                return node.args[position]
            return keyword(node, name) if name else None

        if func & OPEN_FUNCTIONS:
            mode_node = arg(1, "mode")
            mode = "r" if mode_node is None else fold_str(mode_node, self.r.constants)
            if mode is None or set(mode) & set("wax+"):
                return arg(0, "file") or arg(0, "filename"), snippet(node, 50)
            return None
        if "os.open" in func:
            flags = arg(1, "flags")
            if flags is not None and self.r.resolve(flags) == {"os.O_RDONLY"}:
                return None
            return arg(0, "path"), snippet(node, 50)
        if func & COPY_FUNCTIONS or func & LINK_FUNCTIONS:
            return arg(1, "dst"), snippet(node, 50)
        for name in func:
            if name in SAVE_FUNCTIONS:
                target = arg(*SAVE_FUNCTIONS[name])
                return (target, snippet(node, 50)) if target is not None else None
        if isinstance(node.func, ast.Attribute) and not func:
            method = node.func.attr
            if method in SAVE_METHODS:
                position, name = SAVE_METHODS[method]
                if position is None:
                    return node.func.value, snippet(node, 50)
                target = arg(position, name)
                return (target, snippet(node, 50)) if target is not None else None
            if method == "open" and self._path_like(node.func.value):
                mode = fold_str(arg(0, "mode"), self.r.constants) if arg(0, "mode") is not None else "r"
                if mode is None or set(mode) & set("wax+"):
                    return node.func.value, snippet(node, 50)
            if method == "touch" and self._path_like(node.func.value):
                return node.func.value, snippet(node, 50)
        return None

    def _path_like(self, node: ast.AST) -> bool:
        """Provably a pathlib path: built by Path(...), a `/` join on one, or a name assigned one."""
        if isinstance(node, ast.Call):
            return bool(self.r.resolve(node.func) & PATH_CONSTRUCTORS - {"os.path.join"}) or (
                isinstance(node.func, ast.Attribute)
                and node.func.attr in PATH_METHODS_SAME | {"joinpath"}
                and self._path_like(node.func.value)
            )
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self._path_like(node.left)
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            return self._path_like(node.value)
        if isinstance(node, ast.Name) and node.id in self.r.constants:
            return self._path_like(self.r.constants[node.id])
        return False

    def output_roots(self) -> set[str]:
        """Names this script writes under: a patch may keep writing there."""
        roots = {_root(target) for _, target, _ in self.writes} | {_root(d) for d in self.dirs}
        return {root for root in roots if root}

    # --- every use
    def uses(self, *, all_writes: bool = False) -> list[Use]:
        """Capability uses; writes only when not provably inside the run folder (all of them if asked)."""
        result: list[Use] = []
        idx = index(self.tree)
        kinds = (ast.Name, ast.Attribute, ast.Subscript, ast.Call, ast.AugAssign)
        for node in [node for kind in kinds for node in idx.of_type(kind)]:
            if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript, ast.Call)):
                result.extend(self._reference(node))
            if isinstance(node, ast.Call):
                result.extend(self._call_checks(node))
            if (
                isinstance(node, ast.Attribute)
                and node.attr in DANGEROUS_ATTRIBUTES
                and not any(classify(name) for name in self.r.resolve(node))
            ):
                result.append(self._use("dynamic-code", f"access to {node.attr}", node))
            result.extend(self._env(node))
        for call, target, text in self.writes:
            if all_writes or not self.paths.inside(target):
                result.append(
                    Use(
                        "write-outside-run",
                        f"a write not provably inside the run folder: {text}",
                        f"write:{ast.unparse(call)}",
                        call.lineno,
                    )
                )
        return result

    def _use(self, rule: str, what: str, node: ast.AST) -> Use:
        return Use(
            rule, what, f"{rule}:{what}:{ast.unparse(self._context(node))}", getattr(node, "lineno", 0)
        )

    def _context(self, node: ast.AST) -> ast.AST:
        """The call (or statement) a use sits in: what is compared between old and new."""
        current = node
        while current in self.r.parent_of:
            if isinstance(current, (ast.Call, ast.stmt)):
                return current
            current = self.r.parent_of[current]
        return current

    def _reference(self, node: ast.AST) -> list[Use]:
        if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)) and not isinstance(node.ctx, ast.Load):
            return []
        names = self.r.resolve(node)
        found = sorted({(rule, name) for name in names if (rule := classify(name))})
        parent = self.r.parent_of.get(node)
        if found:
            chained = isinstance(parent, (ast.Attribute, ast.Subscript)) and parent.value is node
            if chained and any(classify(name) for name in self.r.resolve(parent)):
                return []  # the longer chain is the use: `subprocess.run`, not `subprocess`
            rule, name = found[0]
            called = isinstance(parent, ast.Call) and parent.func is node
            return [self._use(rule, f"{'a call to' if called else 'a reference to'} {name}", node)]
        if isinstance(node, ast.Name) and names & RISKY_MODULES and self._escapes(node, parent):
            module = sorted(names & RISKY_MODULES)[0]
            return [self._use("dynamic-code", f"the {module} module used as a value", node)]
        return []

    def _escapes(self, node: ast.Name, parent: ast.AST | None) -> bool:
        """A module object that leaves an attribute chain could reach any of its functions unseen."""
        if isinstance(parent, (ast.Attribute, ast.Subscript)) and parent.value is node:
            return False
        inspected = {"getattr", "hasattr", "vars", "id", "print", "repr", "type"}
        if (
            isinstance(parent, ast.Call)
            and parent.args
            and parent.args[0] is node
            and self.r.resolve(parent.func) & inspected
        ):
            return False
        if isinstance(parent, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and parent.value is node:
            targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
            return not all(isinstance(target, ast.Name) for target in targets)
        return not isinstance(parent, (ast.Compare, ast.Expr))

    def _call_checks(self, node: ast.Call) -> list[Use]:
        func = self.r.resolve(node.func)
        result: list[Use] = []
        attribute_functions = func & {"getattr", "setattr", "delattr"}
        if attribute_functions and len(node.args) >= 2 and fold_str(node.args[1], self.r.constants) is None:
            which = sorted(attribute_functions)[0]
            result.append(self._use("dynamic-code", f"{which} with a computed name", node))
        getter = func & {"operator.attrgetter", "operator.methodcaller"}
        if getter and (not node.args or fold_str(node.args[0], self.r.constants) is None):
            result.append(self._use("dynamic-code", "operator.attrgetter with a computed name", node))
        if "vars" in func and not node.args:
            result.append(self._use("dynamic-code", "a call to vars()", node))
        importer = func & {"__import__", "importlib.import_module"}
        if importer and node.args and fold_str(node.args[0], self.r.constants) is None:
            result.append(self._use("dynamic-code", "an import of a computed module name", node))
        remote = keyword(node, "trust_remote_code")
        if remote is not None and not (isinstance(remote, ast.Constant) and not remote.value):
            result.append(self._use("dynamic-code", "trust_remote_code (runs code from the model hub)", node))
        url = next((text for text in _string_args(node) if URL.match(text)), None)
        if url is not None:
            result.append(self._use("network", f"a call to a URL: {snippet(node, 50)}", node))
        if "torch.load" in func:
            weights_only = keyword(node, "weights_only")
            if (isinstance(weights_only, ast.Constant) and weights_only.value is False) or keyword(
                node, "pickle_module"
            ):
                result.append(self._use("deserialize", "a pickle load: torch.load(weights_only=False)", node))
        if "numpy.load" in func:
            allow = keyword(node, "allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                result.append(self._use("deserialize", "a pickle load: numpy.load(allow_pickle=True)", node))
        if "yaml.load" in func or "yaml.load_all" in func:
            loader = keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or dotted(loader).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                result.append(self._use("deserialize", "an unsafe yaml.load", node))
        if isinstance(node.func, ast.Attribute) and not func:
            method = node.func.attr
            if method in DELETE_METHODS or (method in PATH_MOVE_METHODS and self._path_like(node.func.value)):
                result.append(
                    self._use("file-delete", f"a call to .{method}() on {snippet(node.func.value, 30)}", node)
                )
            elif method in PERMISSION_METHODS:
                result.append(
                    self._use(
                        "permission-change", f"a call to .{method}() on {snippet(node.func.value, 30)}", node
                    )
                )
        return result

    def _env(self, node: ast.AST) -> list[Use]:
        target: ast.AST | None = None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)):
            target = node.value
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            target = node
        elif isinstance(node, ast.AugAssign):
            target = node.target
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ENV_METHODS
        ):
            target = node.func.value
        if target is None or not self.r.resolve(target) & ENVIRON:
            return []
        statement = self._statement(node)
        return [
            Use(
                "env-mutation",
                f"an environment change: {snippet(statement, 50)}",
                f"env:{ast.unparse(statement)}",
                statement.lineno,
            )
        ]

    def _statement(self, node: ast.AST) -> ast.stmt:
        current = node
        while not isinstance(current, ast.stmt) and current in self.r.parent_of:
            current = self.r.parent_of[current]
        return current


# ------------------------------------------------------------------------------------------- imports
def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    result = []
    for node in index(tree).nodes:
        if isinstance(node, ast.Import):
            result.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            result.append(("." * node.level + (node.module or ""), node.lineno))
    return result


def _pure(module: str) -> bool:
    return module.split(".")[0] in PURE_MODULES or _under(module, TRUSTED_MODULES)


def _capability_module(module: str) -> bool:
    return classify(module) is not None or _under(module, RISKY_MODULES - {"io", "pathlib", "sys", "os"})


def _new_imports(old: ast.AST, new: ast.AST) -> list[tuple[str, int]]:
    """Modules the patch imports that the original did not (a submodule of a package it had is not new,
    unless the submodule itself is a capability such as `torch.hub` or `urllib.request`)."""
    old_modules = {module for module, _ in _imports(old)}
    old_tops = {module.split(".")[0] for module in old_modules if not module.startswith(".")}
    seen: set[str] = set()
    result = []
    for module, line in _imports(new):
        if module in old_modules or module in seen or _pure(module):
            continue
        if module.split(".")[0] in old_tops and not _capability_module(module):
            continue
        seen.add(module)
        result.append((module, line))
    return result


# ------------------------------------------------------------------------------------------- rules
@rules.rule("new-import", needs_old=False)
def rule_no_new_import(s: Scripts) -> list[GuardFinding]:
    """A new module is new code the script can run; only modules that merely compute are let in."""
    assert s.new_tree is not None
    return [
        rules.finding("new-import", f"adds an import of {module} (line {line})", line)
        for module, line in _new_imports(s.old_capability_tree, s.new_tree)
    ]


@rules.rule("capability", needs_old=False)
def rule_no_new_capability(s: Scripts) -> list[GuardFinding]:
    """A use of a process, network, deletion, permission, environment, dynamic-code or write capability
    that the original did not have at that call site."""
    assert s.new_tree is not None
    old = _Analysis(s.old_capability_tree, s.run_dir)
    new = _Analysis(s.new_tree, s.run_dir, roots=old.output_roots())
    remaining = Counter(use.signature for use in old.uses(all_writes=True))
    findings: list[GuardFinding] = []
    for use in sorted(new.uses(), key=lambda u: u.line):
        if remaining[use.signature] > 0:
            remaining[use.signature] -= 1
            continue
        finding = rules.finding(use.rule, f"adds {use.what} (line {use.line})", use.line)
        if finding not in findings:
            findings.append(finding)
    findings.extend(_redirected_outputs(s, old, new))
    return findings


def _redirected_outputs(s: Scripts, old: _Analysis, new: _Analysis) -> list[GuardFinding]:
    """An output dir the script already wrote to, now pointed elsewhere: its old writes would follow."""
    assert s.new_tree is not None
    old_assigned = _assigned_roots(s.old_capability_tree, old.output_roots())
    old_values = {ast.unparse(value) for values in old_assigned.values() for value in values}
    findings = []
    for name, values in _assigned_roots(s.new_tree, old.output_roots()).items():
        for value in values:
            if ast.unparse(value) in old_values or new.paths.inside(value):
                continue
            findings.append(
                rules.finding(
                    "write-outside-run",
                    f"adds a write not provably inside the run folder: output dir {name} set to {snippet(value, 40)} "
                    f"(line {value.lineno})",
                    value.lineno,
                )
            )
    return findings


def _assigned_roots(tree: ast.AST, roots: set[str]) -> dict[str, list[ast.expr]]:
    result: dict[str, list[ast.expr]] = {}
    for node in index(tree).nodes:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                text = dotted(target) or (ast.unparse(target) if isinstance(target, ast.Subscript) else "")
                if text in roots:
                    result.setdefault(text, []).append(node.value)
    return result


def capabilities(tree: ast.AST, *, run_dir: str | None = None) -> list[GuardFinding]:
    """Everything a whole script can do, for a person approving it: imports, then uses by line."""
    findings = []
    modules: set[str] = set()
    for module, line in _imports(tree):
        if not _pure(module) and module not in modules:
            modules.add(module)
            findings.append(rules.finding("new-import", f"imports {module} (line {line})", line))
    uses = sorted(_Analysis(tree, run_dir).uses(), key=lambda u: u.line)
    seen: set[tuple[str, int]] = set()
    for use in uses:
        if (use.what, use.line) not in seen:
            seen.add((use.what, use.line))
            findings.append(rules.finding(use.rule, f"{use.what} (line {use.line})", use.line))
    return findings
