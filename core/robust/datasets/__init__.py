"""Datasets for the engine: the in-memory split types and the loader (loading), and the formats
(.npz, ImageFolder archives, torchvision sets), safe archive extraction and augmentation."""
