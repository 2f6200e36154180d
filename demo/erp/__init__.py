"""Fake servers of commercial ERPs that cannot run here, each faithful to its vendor's API."""
