from quarry_agent.cli import main

raise SystemExit(main())
