"""``python -m service``: the ``ringbridge`` command line."""

from .cli import main

raise SystemExit(main())
