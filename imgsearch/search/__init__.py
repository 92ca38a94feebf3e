"""The query side: planning and running a search, the relevance floor, browsing the library, near-copies."""
