from nnfit.cli import main

raise SystemExit(main())
