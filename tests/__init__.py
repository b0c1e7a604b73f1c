"""The test suite, imported as a package (``from tests.helpers import ...``)."""
