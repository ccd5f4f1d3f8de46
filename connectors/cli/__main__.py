"""``python -m connectors.cli``: the ``qvl`` command without the console script."""
import sys

from connectors.cli import main

sys.exit(main())
