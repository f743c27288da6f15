from dspex_cluster.cli import main

raise SystemExit(main())
