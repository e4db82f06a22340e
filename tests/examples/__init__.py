"""Tests that run the example programs as real processes."""
