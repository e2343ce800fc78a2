"""Exporting trained programs to other runtimes: `onnx.export_onnx` writes the inference graph as ONNX."""
