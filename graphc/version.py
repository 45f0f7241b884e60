"""graphc's version, in a base module so any stage can read it without importing the package
front door (``graphc/__init__.py`` imports the whole pipeline)."""

__version__ = "0.1.0"
