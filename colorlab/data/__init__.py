from colorlab.data.datamodule import SOURCES, ColorDataModule, DeviceBatches, add_lab, embeddings_for, validation_data

__all__ = ["SOURCES", "ColorDataModule", "add_lab", "DeviceBatches", "embeddings_for", "validation_data"]
