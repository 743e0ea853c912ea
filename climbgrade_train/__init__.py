"""climbgrade training: boardlib databases -> transformer regressor -> ONNX + sidecar.

Imports the runtime (tokenizer, sidecar, tensor names); the runtime never imports this package.
"""
