"""Interventions: declarative specs for clamping (during training), ablation and patching.

The engine (spec, validation against a model, TransformerLens forward hooks switched by
training-step windows) is built in the clamping issue; this package is its home so that the
API reads `from interventions import Intervention`.
"""
