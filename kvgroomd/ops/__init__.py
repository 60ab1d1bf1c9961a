"""Operator tools: ls, stats, tail."""
