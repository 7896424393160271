"""``python -m ringbridge``: the ``ringbridge`` command line."""

from .cli import main

raise SystemExit(main())
