"""Code that runs INSIDE the sandbox. `agent_runner.py` is a standalone program (stdlib +
claude-agent-sdk only): it is copied into the sandbox and never imports `lib`.

Every turn is ONE command: `python -c LAUNCHER RUNNER WORKDIR MARKER WANT ARGS...`. The launcher
checks, inside that command, that the runner file is there and (when MARKER is not empty) that
MARKER holds WANT, the record of what the backend installed. If something is missing it prints
`{"type": "needs_install", "missing": [...]}` and exits with NEEDS_INSTALL, and only then does the
function install and run the command again; so a warm turn needs no file check of its own. Else
it makes WORKDIR (and the Claude config dir), enters it and runs the runner with ARGS.
"""

from pathlib import Path

RUNNER_SOURCE_PATH = Path(__file__).with_name("agent_runner.py")
NEEDS_INSTALL = 4  # the launcher's exit status when the runner or the agent SDK is missing

LAUNCHER = """\
import json, os, runpy, sys
runner, workdir, marker, want = sys.argv[1:5]
def holds(path, text):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read() == text
    except OSError:
        return False
missing = [what for what, ok in (("runner", os.path.isfile(runner)),
                                 ("agent", not marker or holds(marker, want))) if not ok]
if missing:
    print(json.dumps({"type": "needs_install", "missing": missing}), flush=True)
    sys.exit(EXIT_STATUS)
for folder in (workdir, os.environ.get("CLAUDE_CONFIG_DIR")):
    if folder:
        os.makedirs(folder, exist_ok=True)
os.chdir(workdir)
sys.argv = [runner, *sys.argv[5:]]
runpy.run_path(runner, run_name="__main__")
""".replace("EXIT_STATUS", str(NEEDS_INSTALL))
