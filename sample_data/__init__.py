"""Bundled IDRiD sample photographs and masks (CC BY 4.0; see README.md in this folder)."""
