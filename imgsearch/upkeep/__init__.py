"""Looking after an index: check and repair, rebuild beside, prune, re-embed, backfill image vectors, export."""
