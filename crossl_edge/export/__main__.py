from crossl_edge.export.cli import main

raise SystemExit(main())
