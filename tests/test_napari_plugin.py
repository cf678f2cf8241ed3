"""The plugin as napari sees it: the manifest validates, and File > Open Sample works."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")


def test_manifest_validates() -> None:
    from importlib import resources

    pm = npe2.PluginManifest.from_file(str(resources.files("napari_lesionseg") / "napari.yaml"))
    assert pm.name == "napari-lesionseg"
    assert {s.key for s in pm.contributions.sample_data} == {"idrid_04", "idrid_16"}


@pytest.mark.gui
def test_open_sample_through_the_manifest(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-lesionseg", "idrid_04")
    names = [layer.name for layer in viewer.layers]
    assert names == ["IDRiD_04", "IDRiD_04 ground truth"]
    img, gt = viewer.layers
    assert img.rgb and img.data.shape == (1424, 2144, 3)
    assert gt.data.shape == (1424, 2144) and set(np.unique(gt.data)) == {0, 1}
    assert len(layers) == 2
