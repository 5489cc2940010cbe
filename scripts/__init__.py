"""The command-line scripts (``python scripts/X.py``); a package so that ``maskplus-demo`` and the
tests can import them."""
