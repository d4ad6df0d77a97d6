from phyassist_tui.cli import main

raise SystemExit(main())
