"""Training and fine-tuning (Keras): the demo models, and recovery after pruning."""
