from edgesp.cli import main

raise SystemExit(main())
