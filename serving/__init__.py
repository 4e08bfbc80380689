"""Serving: TorchScript export, Triton model repositories, and the Triton server's lifecycle."""
