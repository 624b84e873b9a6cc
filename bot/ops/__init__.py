"""What an operator runs and watches: health, metrics, logs and disk retention."""
