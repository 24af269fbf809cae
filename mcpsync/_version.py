"""The package version: a leaf module, so any layer may name it without importing the rest."""
__version__ = "0.1.0"
