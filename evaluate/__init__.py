"""Measuring what knowledge injection did to a model, and plotting it."""
