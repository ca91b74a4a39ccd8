"""Pure normalizers shared by the indexer and query understanding.

Documents and queries go through the same functions so they always compare equal. Nothing
here does I/O (beyond package data), logs or raises on string input.
"""
