"""`python -m helpers <command>`: the course's notebooks as commands (see helpers/cli.py)."""
import sys

from helpers.cli import main

sys.exit(main())
