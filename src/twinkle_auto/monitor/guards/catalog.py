"""What counts as a capability: the modules, functions and methods the capability guard looks for.

Tables, not logic: the guard (capability.py) resolves every name a script uses to a dotted name such as
`os.system` and asks `classify` which rule it falls under. Everything here is a general fact about the
standard library and common ML libraries, not about any one script.
"""

from __future__ import annotations

import builtins
import functools
import re

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


def under(name: str, modules: frozenset[str]) -> bool:
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
    if under(name, PROCESS_MODULES) or PROCESS_OS.match(name) or name in PROCESS_NAMES:
        return "process-call"
    if name in DELETE_NAMES:
        return "file-delete"
    if PERMISSION_OS.match(name) or name == "shutil.chown":
        return "permission-change"
    if (under(name, NETWORK_MODULES) and not under(name, NETWORK_PURE)) or name in NETWORK_NAMES:
        return "network"
    if name in DESERIALIZE_NAMES:
        return "deserialize"
    module, _, function = name.rpartition(".")
    if module in PICKLE_MODULES and function in PICKLE_FUNCTIONS:
        return "deserialize"
    if name in DYNAMIC_NAMES or under(name, DYNAMIC_MODULES):
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
