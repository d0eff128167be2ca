# The certify plugin serves both certify/ (the certificates) and tests/ (tests of the suite).
pytest_plugins = ["certify.plugin", "pytester"]
