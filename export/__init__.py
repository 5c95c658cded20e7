"""Export: fold WTM into Dec2^T and write verified ONNX / TensorRT / torch.export artefacts."""
