"""The query side: the Searcher an engine asks (searching.py), planning and running a search, the
relevance floor, browsing the library, near-copies."""
