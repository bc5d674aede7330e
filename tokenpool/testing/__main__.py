"""``python -m tokenpool.testing``: run the loopback provider emulator (see ``--help``)."""

from ._server import emulator_main

raise SystemExit(emulator_main())
