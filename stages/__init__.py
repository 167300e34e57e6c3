"""Thin entry points that DVC calls (``python -m stages.<name>``): parse params, call the library, write outputs."""
