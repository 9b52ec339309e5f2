from loraplane.cli.main import main

raise SystemExit(main())
