"""Where a claimed job is drawn: in this process, or on a GPU worker through Redis (arq)."""
