"""The CUDA fast path: quantized loading, the fast decoder and its kernels."""
