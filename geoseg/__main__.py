"""``python -m geoseg``: the same as the ``geoseg`` command (handy under ``ray job submit``)."""

import sys

from geoseg.cli import main

sys.exit(main())
