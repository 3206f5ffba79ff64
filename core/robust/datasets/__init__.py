"""Datasets for the engine: the split types (splits: in memory; streamed: read from disk as
batches are drawn) and the loader (loading), and the formats (.npz, ImageFolder archives,
WebDataset shards, torchvision sets), safe archive extraction and augmentation."""
