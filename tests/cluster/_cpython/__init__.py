"""Test code vendored from CPython's test suite (each module names its source and license)."""
