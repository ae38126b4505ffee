"""Datasets: download, verify and process jukemir's four benchmarks, and the synthetic corpus."""

from tunemir.datasets.assets import DATASETS, Asset, candidate_urls, giantsteps_audio_assets, static_assets
from tunemir.datasets.download import DownloadSummary, download_assets
from tunemir.datasets.process import ProcessSummary, build_dataset, process_dataset
from tunemir.datasets.reference import MetadataMismatchError, compare, packaged_reference
from tunemir.datasets.sources import DatasetError, dataset_assets, load_registry
from tunemir.datasets.synth import write_synth

__all__ = [
    "DATASETS", "Asset", "DatasetError", "DownloadSummary", "MetadataMismatchError", "ProcessSummary",
    "build_dataset", "candidate_urls", "compare", "dataset_assets", "download_assets", "giantsteps_audio_assets",
    "load_registry", "packaged_reference", "process_dataset", "static_assets", "write_synth",
]
