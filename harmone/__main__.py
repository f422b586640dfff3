from __future__ import annotations

from harmone.cli import main

raise SystemExit(main())
