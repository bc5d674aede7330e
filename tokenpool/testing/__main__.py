"""``python -m tokenpool.testing``: run the loopback provider emulator (see ``--help``)."""

from ._server import main

raise SystemExit(main())
