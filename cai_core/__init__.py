"""cai: Constitutional-AI post-training that does not collapse."""
__version__ = "0.1.0"
