from colorlab.data.datamodule import SOURCES, ColorDataModule

__all__ = ["SOURCES", "ColorDataModule"]
