"""The leaves (Pillow and NumPy at most): errors, settings, categories, the sidecar, images, face boxes, capacity."""
