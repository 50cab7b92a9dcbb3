"""The run directory and the files that join the stages."""
