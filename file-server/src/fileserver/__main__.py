"""Allow ``python -m fileserver`` (the compose one-shot pool service runs it without installing anything)."""

from fileserver.cli import main

raise SystemExit(main())
