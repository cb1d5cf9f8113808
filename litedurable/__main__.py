"""``python -m litedurable`` is the ``litedurable`` command."""

from ._cli import main

raise SystemExit(main())
