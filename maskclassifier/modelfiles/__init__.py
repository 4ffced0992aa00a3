"""The offline writers of models/: the ONNX twin, its int8 quantization, MTCNN's networks."""
