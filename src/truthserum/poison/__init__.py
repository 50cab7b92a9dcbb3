"""Poisons: label flips, completions, the adversary's share, canaries and their poisons."""
