"""``python -m models COMMAND ...``: the same as the ``sonomark`` command."""
import sys

from models.cli import main

sys.exit(main())
