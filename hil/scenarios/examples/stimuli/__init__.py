"""Stimuli files used by the shipped example scenarios."""
