"""Figures drawn from the result tables."""
