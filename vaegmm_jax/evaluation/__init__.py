"""Measuring detectors: metrics, the accuracy protocols, multi-seed runs and plots."""
