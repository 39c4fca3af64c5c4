from crossl_edge.personalize.cli import main

raise SystemExit(main())
