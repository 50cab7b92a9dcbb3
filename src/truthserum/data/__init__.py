"""Data: the built-in and user data sets, tables and text, loaded without unpickling."""
