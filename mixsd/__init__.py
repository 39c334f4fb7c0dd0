"""Shared pieces of the MixSD pipeline: configs, atomic output, versions, the default base model."""
