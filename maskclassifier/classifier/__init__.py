"""The classifier layer, the only one that loads model files: the backends, the face detector, drawing, "Why?"."""
