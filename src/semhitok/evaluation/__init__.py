"""Evaluation: reconstruction metrics, Fréchet distance on Inception (or stand-in) features,
codebook statistics, the code gallery, and the report pages."""

from .codebook_stats import CodebookUsage, histogram_perplexity
from .evaluate import evaluate, report_markdown
from .frechet import FeatureStats, feature_statistics, frechet_distance
from .gallery import PatchGallery, code_colors, code_grid, code_map, subcode_grid
from .image_metrics import LPIPSMetric, ReconstructionMeter, bits_per_image, psnr, ssim
from .inception import FIDInceptionV3, load_fid_inception_weights

__all__ = [
    "CodebookUsage",
    "FIDInceptionV3",
    "FeatureStats",
    "LPIPSMetric",
    "PatchGallery",
    "ReconstructionMeter",
    "bits_per_image",
    "code_colors",
    "code_grid",
    "code_map",
    "evaluate",
    "feature_statistics",
    "frechet_distance",
    "histogram_perplexity",
    "load_fid_inception_weights",
    "psnr",
    "report_markdown",
    "ssim",
    "subcode_grid",
]
