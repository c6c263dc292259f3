"""Shared building blocks: each lives once here and is tested here; methods compose them."""
