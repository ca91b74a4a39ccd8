"""Search engine adapters: how documents are stored in, and candidates fetched from, each engine.

Engines know nothing of ranking: they return candidate documents and the
search_api re-ranks them the same way whichever engine answered.
"""
