"""``python -m poisonlab``: the ``poisonlab`` command where its script is not on PATH (a cluster's module env)."""

import sys

from poisonlab.cli import main

sys.exit(main())
