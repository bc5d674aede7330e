"""``celery_plain_app`` with structlog configured the naive way: its defaults, printing to standard output.

The control of ``tests/integrations/test_celery_logging.py``: what the issue
reported.  structlog's default ``PrintLogger`` prints to whatever
``sys.stdout`` is when it writes, and in a prefork child Celery has replaced
that with a proxy logging every line at ``worker_redirect_stdouts_level``
(``WARNING``), with no level filter before it.
"""

from __future__ import annotations

import structlog
from celery_plain_app import app, call_resource

__all__ = ["app", "call_resource"]

structlog.configure()
