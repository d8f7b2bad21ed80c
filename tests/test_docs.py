"""Every code block in docs/ runs, so a tutorial cannot rot.

Python blocks of one page run in order in one namespace (a page is one lesson); `sh` blocks
whose lines start with `ncemu` run through the command-line entry point in-process and must
exit 0.  Blocks marked ```text are output to look at, not code.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from emulator.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
PAGES = sorted(p for p in DOCS.glob("*.md") if BLOCK.search(p.read_text()))


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(page.read_text())]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_block_of_the_page_runs(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # lessons write their files here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    ran = 0
    for language, code in blocks(page):
        if language == "python":
            exec(compile(code, f"{page.name}", "exec"), namespace)
            ran += 1
        elif language in ("sh", "bash", "console"):
            for line in code.splitlines():
                line = line.split(" #")[0].strip()
                if line.startswith("ncemu "):
                    args = [os.path.expandvars(a) for a in shlex.split(line)[1:]]
                    assert main(args) == 0, f"{page.name}: `{line}` failed"
                    ran += 1
    assert ran > 0, f"{page.name} has code blocks but none ran"
    capsys.readouterr()


def test_every_lesson_has_goal_and_exercise():
    lessons = sorted(DOCS.glob("[0-9][0-9]-*.md"))
    assert lessons, "docs/ has no lessons"
    for page in lessons:
        text = page.read_text()
        for part in ("**Goal.**", "## What to look at", "## Exercise"):
            assert part in text, f"{page.name} has no {part}"
        assert "```" in text, f"{page.name} has no commands or code to run"
