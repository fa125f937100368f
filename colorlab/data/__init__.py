from colorlab.data.datamodule import SOURCES, ColorDataModule, add_lab

__all__ = ["SOURCES", "ColorDataModule", "add_lab"]
