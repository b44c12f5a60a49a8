"""Bit-packed record layouts shared by the wire format, the archive and the counting kernels."""
