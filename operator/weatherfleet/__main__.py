"""`python -m weatherfleet`: the same CLI as the `weatherfleet` command."""

from weatherfleet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
