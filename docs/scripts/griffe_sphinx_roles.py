"""A griffe extension for the documentation build: Sphinx-style roles in docstrings become links.

tokenpool's docstrings are Google style with a few reStructuredText habits:
roles such as ``:class:`~tokenpool.Secret``` and ``:meth:`TokenPool.statistics```,
and ``Example::`` before an indented block.  mkdocstrings renders Markdown, where
a role would show as literal text.  Before the docstrings are parsed, this
extension rewrites each role into a cross-reference that mkdocs-autorefs
resolves (a link to the object's entry in the API reference), with the title
Sphinx would show (``~`` keeps the last component; functions and methods get
``()``).  A role whose target is not on any page (a private module, say)
renders as code, not as a broken link: the references are *optional*.

It also drops the second colon of a trailing ``::`` and gives a ``Raises:``
entry that lists several exceptions without a description the colon the
Google parser needs, so that they are shown rather than dropped with a
warning.

Loaded by ``mkdocs.yml`` (``extensions: [docs/scripts/griffe_sphinx_roles.py]``);
it never changes the source files.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|meth|func|data|attr|mod|exc|obj|const):"
    r"`(?P<tilde>~?)(?P<text>[^`<]+?)(?:\s*<(?P<target>[^>`]+)>)?`"
)
_CALLABLE_ROLES = frozenset({"meth", "func"})
#: A Google section header (``Raises:``) and an entry line under it.
_SECTION = re.compile(r"^(?P<indent>\s*)(?P<name>[A-Z][A-Za-z ]*):\s*$")


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """The full path *name* stands for in *obj*'s scope (``TokenSource.fetch`` → ``tokenpool._source…``)."""
    name = name.lstrip(".")
    if name.startswith("tokenpool"):
        return name
    head, _, rest = name.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            found = scope.resolve(head)
        except (griffe.NameResolutionError, KeyError, AttributeError, ValueError):
            scope = scope.parent
            continue
        return f"{found}.{rest}" if rest else found
    return None


def _link(obj: griffe.Object, match: re.Match[str]) -> str:
    role, tilde, text, target = match["role"], match["tilde"], match["text"].strip(), match["target"]
    title = text if target else (text.rsplit(".", 1)[-1] if tilde else text.lstrip("."))
    if role in _CALLABLE_ROLES and not title.endswith(")"):
        title += "()"
    path = _resolve(obj, (target or text).strip())
    code = f"<code>{html.escape(title)}</code>"
    if path is None:
        return code
    return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'


def _fix_raises(lines: list[str]) -> list[str]:
    """``Raises:`` entries like ``A, B, C.`` (no description) get the ``:`` the parser needs."""
    fixed: list[str] = []
    in_raises = False
    entry_indent: int | None = None
    for line in lines:
        header = _SECTION.match(line)
        if header is not None:
            in_raises = header["name"] == "Raises"
            entry_indent = None
            fixed.append(line)
            continue
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if in_raises and stripped:
            if entry_indent is None:
                entry_indent = indent
            if indent == entry_indent and ":" not in stripped:
                line = line.rstrip().rstrip(".") + ":"
        fixed.append(line)
    return fixed


def rewrite(obj: griffe.Object, text: str) -> str:
    """*text* (a docstring of *obj*) with its roles as cross-references and its ``::`` as ``:``."""
    text = _ROLE.sub(lambda match: _link(obj, match), text)
    lines = [re.sub(r"(?<=\S)::$", ":", line) for line in text.splitlines()]
    return "\n".join(_fix_raises(lines))


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of the package once it is loaded (names resolve only then)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()
        self._walk(pkg, seen)

    def _walk(self, obj: griffe.Object, seen: set[int]) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)  # type: ignore[arg-type]  # not an alias: an Object
