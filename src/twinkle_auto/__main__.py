"""`python -m twinkle_auto` does what the `twinkle-auto` command does."""

from twinkle_auto.app.cli import main

raise SystemExit(main())
