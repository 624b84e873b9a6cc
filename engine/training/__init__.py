"""Training: the character LoRA trainer, its data and prior, and the checkpoint picker."""
