"""mmap-harness: real kernels in QEMU, real mmap drivers, measured."""

__version__ = "0.1.0"
