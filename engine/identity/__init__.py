"""Identity: is this frame still the character? CLIP and face scores, and the re-roll policy."""
