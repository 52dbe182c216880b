"""`python -m stream` is `churnwatch`."""

from __future__ import annotations

from stream.cli import main

if __name__ == "__main__":
    main()
