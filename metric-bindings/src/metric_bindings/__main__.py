"""``python -m metric_bindings``: the retrieval demo (see metric_bindings.demo)."""

from metric_bindings.demo import main

raise SystemExit(main())
