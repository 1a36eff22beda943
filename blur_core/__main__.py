from blur_core.cli import main

raise SystemExit(main())
