#!/usr/bin/env python3
"""Set up and run ncemu from a fresh checkout with nothing but Python 3.10+.

    python3 dev.py run [ARGS...]    create .venv if needed, install ncemu into it, `ncemu run ARGS`
    python3 dev.py test [ARGS...]   the same set-up, then the test suite (pytest ARGS)
    python3 dev.py ncemu [ARGS...]  any ncemu command

The virtual environment is reinstalled only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".ncemu-installed"


def ensure_environment() -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 - dev.py may be started by any python3
        sys.exit(f"ncemu needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"[dev] creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    log = VENV / "install.log"
    print(f"[dev] installing ncemu and its dependencies (first run only; log: {log})", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    with log.open("w") as sink:
        for step in ([*pip, "--upgrade", "pip"], [*pip, "-e", f"{ROOT}[test,plot]"]):
            if subprocess.call(step, stdout=sink, stderr=subprocess.STDOUT) != 0:
                sink.flush()
                print(log.read_text()[-4000:], file=sys.stderr)
                sys.exit(f"[dev] installation failed: {' '.join(step)} (full log: {log})")
    STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "ncemu"):
        print(__doc__)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "test":
        args = [str(BIN / "python"), "-m", "pytest", *rest]
    elif command == "run":
        args = [str(BIN / "ncemu"), "run", *rest]
    else:
        args = [str(BIN / "ncemu"), *rest]
    return subprocess.call(args, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
