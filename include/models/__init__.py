"""Models: the architectures' builders and transfer surgery (architectures.py), the batched trainer
of K replicas of any Keras model (replicas.py), and what the training tasks need around it
(training.py). Nothing heavy at import: TensorFlow and Keras are imported inside the functions."""
