"""JAX/Flax-NNX exporter: :mod:`.noise` turns an nnx model into a pure function of
(inputs, noise); :mod:`.export` writes it through jax2onnx / jax2tf."""
