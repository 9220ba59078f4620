"""Inference: a finished run's model loaded once to classify images (`predictor`), and written
out as an ONNX or TorchScript file checked against PyTorch (`export`).

Everything here takes a run object (core.runs.store.Run, duck-typed: `.id`, `.config()`,
`.checkpoint`, `.class_names()`, `.exports_dir`, `.split_file`) and never imports core.runs:
the run store sits above this layer (data -> train -> explain/serve -> runs -> cli).
"""
