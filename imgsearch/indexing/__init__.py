"""The indexing pipeline: read, caption (or reuse), embed and store pictures, and keep watching folders."""
