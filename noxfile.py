"""Development sessions: ``nox -l`` lists them, ``nox -s NAME`` runs one.

``bash .ci/run`` runs the linters, the type checker and the README's test
command in ``.venv`` (with every extra), then ``tests_without_extras`` here:
the core must work, and be tested, with none of the optional dependencies.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "types", "tests", "tests_without_extras", "docs"]

#: The tests of the core (pool, cells, timing, metrics, logs, public API) that need no
#: optional extra: no emulator (hypercorn, trustme), no trio, no Redis, no Celery.
#: Everything else in tests/ needs the emulator at least and runs in ``tests``.
CORE_TESTS = [
    "tests/core",
    "tests/package/test_exported_members.py",
    "tests/package/test_extras.py",
    "tests/package/test_layout.py",
    "tests/pool/test_http_body_cap.py",
    "tests/observability/test_logging.py",
    "tests/observability/test_metrics.py",
]


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    session.install("-e", ".[dev,bench,docs]")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The README's test command, with every extra (servers such as redis-server come from .ci/run)."""
    session.install("-e", ".[dev,bench,docs]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def tests_without_extras(session: nox.Session) -> None:
    """``pip install tokenpool`` and nothing else: the core and its own tests (trio cases skip)."""
    session.install("-e", ".", "pytest>=8")
    session.run("python", "-c", "import tokenpool, tokenpool.fleet, tokenpool.testing, tokenpool.metrics")
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", *CORE_TESTS, *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site: every page, link, anchor and API page must resolve (``--strict``)."""
    session.install("-e", ".[docs]")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", "--site-dir", f"{session.create_tmp()}/site")
