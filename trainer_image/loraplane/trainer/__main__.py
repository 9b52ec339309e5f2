from loraplane.trainer.train import main

raise SystemExit(main())
