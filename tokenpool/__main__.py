"""``python -m tokenpool`` is the ``tokenpool`` command."""

import sys

from ._cli import main

sys.exit(main())
