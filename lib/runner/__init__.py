"""Code that runs INSIDE the sandbox. `agent_runner.py` is a standalone program (stdlib +
claude-agent-sdk only): it is copied into the sandbox and never imports `lib`.

Every turn is ONE command: `python -I -S -c LAUNCHER RUNNER WORKDIR MARKER WANT ARGS...`. The
launcher checks, inside that command, that the runner file is there and (when MARKER is not
empty) that MARKER holds WANT, the record of what the backend installed. If something is missing
it prints `{"type": "needs_install", "missing": [...]}` and exits with NEEDS_INSTALL, and only
then does the function install and run the command again; so a warm turn needs no file check of
its own. Else it makes WORKDIR (and the Claude config dir) and enters it.

A warm turn (`--warm`) is relayed by the launcher itself: it hands the job to the sandbox's warm
agent over a Unix socket and copies the agent's output to stdout, a SIGINT becoming `interrupt`
(the user's stop). That is the whole per-turn process: an isolated interpreter without site
packages (`-I -S`) and three builtin modules (`_socket`, `_signal`, `binascii`), ~10 ms to start,
where the runner's imports alone took ~50 (and `socket`, `signal`, `hashlib` ~15).
When no agent listens it has the runner start one (`--start-agent`) and relays to it. Anything
else (a one-shot turn, a job it cannot read, an agent that cannot start) becomes the runner
itself (`exec`, a full interpreter: the agent SDK's site packages), with ARGS.

A backend that can reach the agent's socket from the function (the local one: it is on this
machine) skips this command for a warm turn and does the relay's job itself
(`Sandbox.call_agent`, at `agent_address`); the command still starts the agent when none
listens. On Vercel the socket is inside the sandbox: every turn is this command.

The agent's address is an abstract Unix socket (no path-length limit, nothing on disk; its
NAME is given to the runner without the leading NUL) named after a 64-bit checksum of the
runner's path (a new runner version, a new path), HOME, the config dir and the model settings:
a changed runner or key gets a new agent.
"""

import binascii
from collections.abc import Mapping
from pathlib import Path

RUNNER_SOURCE_PATH = Path(__file__).with_name("agent_runner.py")
NEEDS_INSTALL = 4  # the launcher's exit status when the runner or the agent SDK is missing
PYTHON_FLAGS = "-IS"  # the launcher needs no site packages and no environment of Python's
# What makes an agent the right one for a turn, besides the runner's path (its version).
AGENT_ENV = ("HOME", "CLAUDE_CONFIG_DIR", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")
# How a relay of the warm agent's answer (the launcher's, or a backend's `call_agent`) knows it
# is complete: the first bytes of a final line, and the status to end with after it; and the
# line it says when the agent hangs up without one.
FINAL_LINES = ((b'{"type": "result"', 0), (b'{"type": "restore_needed"', 3),
               (b'{"type": "error"', 1))
NO_RESULT = (b'{"type": "error", "code": "agent_failed", '
             b'"message": "the warm agent ended without a result"}')


def agent_address(runner: str, env: Mapping[str, str]) -> str:
    """The warm agent's abstract socket NAME for a runner path and the turn's environment, the
    way the launcher computes it in the sandbox: a backend that can reach the socket itself
    (`Sandbox.call_agent`) skips the per-turn command."""
    fingerprint = "\0".join([runner] + [env.get(name, "") for name in AGENT_ENV]).encode()
    first, second = binascii.crc32(fingerprint), binascii.crc32(fingerprint, 0x5BD1E995)
    return f"agent-runner-{first:08x}{second:08x}"


LAUNCHER = """\
import os, sys
runner, workdir, marker, want = sys.argv[1:5]
args = sys.argv[5:]
def holds(path, text):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read() == text
    except OSError:
        return False
missing = [what for what, ok in (("runner", os.path.isfile(runner)),
                                 ("agent", not marker or holds(marker, want))) if not ok]
if missing:
    print('{"type": "needs_install", "missing": [%s]}' % ", ".join('"%s"' % m for m in missing),
          flush=True)
    sys.exit(EXIT_STATUS)
for folder in (workdir, os.environ.get("CLAUDE_CONFIG_DIR")):
    if folder:
        os.makedirs(folder, exist_ok=True)
os.chdir(workdir)
warm, job = len(args) == 3 and args[2] == "--warm", None
if warm and args[0] == "--job":
    import binascii
    try:
        job = binascii.a2b_base64(args[1], strict_mode=True)
    except ValueError:  # the runner says what is wrong with it
        warm = False
if warm:
    import _signal, _socket, binascii
    names = AGENT_ENV
    fingerprint = "\\0".join([runner] + [os.environ.get(name, "") for name in names]).encode()
    name = "agent-runner-%08x%08x" % (binascii.crc32(fingerprint),
                                      binascii.crc32(fingerprint, 0x5BD1E995))
    def connect():
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            conn.connect("\\0" + name)
            return conn
        except OSError:
            conn.close()
    conn = connect()
    if conn is None:
        import subprocess
        subprocess.run([sys.executable, runner, "--start-agent", name],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        conn = connect()
    if conn is not None and job is None:  # a job file is read once, now (the runner's rule)
        try:
            with open(args[1], "rb") as handle:
                job = handle.read()
            os.remove(args[1])
        except OSError:
            conn.close()
            conn = None
    cwd = os.getcwd()  # the turn's, in the job: the agent's own may be long gone
    if conn is not None and all(c >= " " for c in cwd):
        escaped = cwd.replace("\\\\", "\\\\\\\\").replace('"', '\\\\"').encode()
        conn.sendall(b'{"cwd": "' + escaped + b'", ' + job.strip()[1:] + b"\\n")
        _signal.signal(_signal.SIGINT, lambda *_: conn.sendall(b"interrupt\\n"))
        status, head = None, b""  # head: the first bytes of the line being relayed
        while status is None and (chunk := conn.recv(1 << 16)):  # the last line ends it
            view = memoryview(chunk)
            while view:
                view = view[os.write(1, view):]
            *ended, rest = chunk.split(b"\\n")
            for line in ended:
                head += line[:32]
                for start, code in FINAL_LINES:
                    if head.startswith(start):
                        status = code
                head = b""
            head = (head + rest[:32])[:32]
        if status is None:
            os.write(1, NO_RESULT + b"\\n")
        sys.exit(1 if status is None else status)
os.execv(sys.executable, [sys.executable, runner] + args)
""".replace("EXIT_STATUS", str(NEEDS_INSTALL)).replace("AGENT_ENV", repr(AGENT_ENV)).replace(
    "FINAL_LINES", repr(FINAL_LINES)).replace("NO_RESULT", repr(NO_RESULT))
