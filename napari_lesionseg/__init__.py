"""napari-lesionseg: hemorrhage segmentation in fundus photographs (napari plugin, CLI, training)."""

__version__ = "0.1.0"
