"""The documentation site as data: its pages, their code blocks, and what they include from examples/."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
EXAMPLES = REPO / "examples"
MKDOCS_YML = REPO / "mkdocs.yml"

#: A fenced block: indentation, fence, info string (language and attributes), body.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>```+)(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
#: A pymdownx.snippets include line: ``--8<-- "path"`` (an optional ``:start:end`` line range).
_SNIPPET = re.compile(r'^\s*--8<--\s+"(?P<path>[^":]+)(?::[0-9:-]+)?"\s*$')


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    language: str
    info: str
    body: str
    line: int

    @property
    def includes(self) -> list[str]:
        """The files the block includes with snippets (repository-relative paths).

        Both forms: one line ``--8<-- "path"``, and the block form (``--8<--``, one path a
        line, ``--8<--``), which Python code blocks use: ``--8<-- "x"`` parses as Python, and
        ruff would "format" it.
        """
        found: list[str] = []
        in_block = False
        for text in self.body.splitlines():
            stripped = text.strip()
            if stripped == "--8<--":
                in_block = not in_block
            elif in_block and stripped:
                found.append(stripped)
            else:
                match = _SNIPPET.match(text)
                if match is not None:
                    found.append(match["path"])
        return found

    @property
    def only_includes(self) -> bool:
        """Whether the block is nothing but snippet includes (its content lives in a file)."""
        lines = [text.strip() for text in self.body.splitlines() if text.strip()]
        includes = set(self.includes)
        return bool(lines) and all(
            line == "--8<--" or line in includes or _SNIPPET.match(line) for line in lines
        )

    def text(self) -> str:
        """The block as rendered: snippet includes replaced by the files' content."""
        if not self.only_includes:
            return self.body
        return "".join((REPO / path).read_text(encoding="utf-8") for path in self.includes)

    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def pages() -> list[str]:
    """Every Markdown page under docs/, relative to it."""
    return sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md") if "scripts" not in path.parts)


def blocks(page: str) -> list[Block]:
    """The fenced code blocks of *page*, in order (indented ones, inside admonitions, included)."""
    text = (DOCS / page).read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        info = match["info"].strip()
        language = info.split()[0] if info else ""
        body = match["body"]
        indent = match["indent"]
        if indent:
            body = "".join(line.removeprefix(indent) for line in body.splitlines(keepends=True))
        found.append(Block(page, language, info, body, text.count("\n", 0, match.start()) + 1))
    return found


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks(page)]


def nav_pages() -> list[str]:
    """The pages mkdocs.yml's ``nav`` lists, in order."""
    import yaml

    config = yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(config["nav"])
    return found


def transcripts(command: str) -> list[list[str]]:
    """The console transcripts in the docs of ``$ COMMAND``: the output lines that follow it."""
    found = []
    for block in all_blocks():
        if block.language != "console":
            continue
        lines = block.body.rstrip("\n").splitlines()
        for index, line in enumerate(lines):
            if line.strip() == f"$ {command}":
                output = []
                for later in lines[index + 1 :]:
                    if later.startswith("$ "):
                        break
                    output.append(later.rstrip())
                found.append(output)
    return found


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}
