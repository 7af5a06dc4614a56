"""Readers of other frameworks' weight files into tfdet models."""
