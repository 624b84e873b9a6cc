"""Jobs in hand: the claim loop, progress reports and the delivery outbox."""
