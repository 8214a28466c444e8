"""Presentation: result models, totals across videos, the compact text and its sizing. Pure functions."""
