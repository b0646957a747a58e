"""Exporters: ONNX today, TensorRT engines built from it later."""

from segbench.export.onnx import ExportError, OnnxExport, ParityReport, export_and_verify, export_onnx

__all__ = ["ExportError", "OnnxExport", "ParityReport", "export_and_verify", "export_onnx"]
