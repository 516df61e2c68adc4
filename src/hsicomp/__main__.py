from hsicomp.cli import main

raise SystemExit(main())
