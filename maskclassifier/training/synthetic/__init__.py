"""Training-time drawing (Pillow and NumPy only): the changes labels survive, and synthetic masks over a face box."""
