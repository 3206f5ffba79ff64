"""Models for the engine: safe loading and saving (modelio), the architectures it can build,
and the TorchScript operator checks."""
