"""Reliability tests: bad input, floods, soak and secrets; they print their figures at the end of the run."""
