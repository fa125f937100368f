from colorlab.data.datamodule import SOURCES, ColorDataModule, DeviceBatches, add_lab, validation_data

__all__ = ["SOURCES", "ColorDataModule", "add_lab", "DeviceBatches", "validation_data"]
