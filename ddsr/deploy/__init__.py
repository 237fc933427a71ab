"""Deploy runtime: build a network for inference (checkpoint, option file, ONNX), run it on images of any size
(tiling), export it (deploy checkpoint, ONNX) and convert train-form checkpoints to the deploy form."""
